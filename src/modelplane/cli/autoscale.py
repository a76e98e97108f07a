"""The gateway, as the autoscaler sees it: requests in flight and replicas per endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelplane.controlplane.autoscaler import Load
    from modelplane.dataplane.gateway import Gateway

__all__ = ["GatewayConcurrency"]


class GatewayConcurrency:
    """Adapts the gateway to the autoscaler's ``ConcurrencyEvidence``.

    In flight = rows queued in each route's batcher + batches out at its workers times the
    mean rows per batch: the batcher counts rows and the pool counts batches, and one
    request is usually one row. Replicas are counted per route (each route runs the
    spec's ``replicas``), so the largest route speaks for the endpoint.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def load(self, endpoint: str) -> Load | None:
        from modelplane.controlplane.autoscaler import Load

        runtime = self.gateway.handler.endpoints.get(endpoint)
        if runtime is None:
            return None
        in_flight, ready, replicas = 0.0, 0, 0
        for route in runtime.routes:
            target = route.target
            infos = target.pool.replicas()
            rows_per_batch = max(target.batcher.mean_batch_rows, 1.0)
            sent = sum(info.outstanding for info in infos)
            in_flight += target.batcher.queued_rows + sent * rows_per_batch
            ready = max(ready, sum(1 for info in infos if info.state == "ready"))
            replicas = max(replicas, len(infos))
        return Load(in_flight, ready, replicas)

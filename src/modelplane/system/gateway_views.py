"""The gateway as each controller sees it, read from its one snapshot.

Every adapter here implements a controller's Protocol (``ServingTarget``,
``RolloutEvidence``, ``ConcurrencyEvidence``, ``SloEvidence``, ``ReplicaSource``) over
:meth:`Gateway.snapshot <modelplane.dataplane.gateway.Gateway.snapshot>`, a typed copy of what
the gateway serves; none of them touches the gateway's live routes, pools or counters, and
replica states are compared as :class:`~modelplane.core.serving.ReplicaState`, never as
strings. Adapters that answer per endpoint ask for that endpoint's snapshot only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from modelplane.core.serving import EndpointView, GatewaySnapshot, ReplicaState, ReplicaView

if TYPE_CHECKING:
    from modelplane.controlplane.autoscaler import Load
    from modelplane.controlplane.endpoints import ServedEndpoint
    from modelplane.controlplane.slo import EndpointCounters
    from modelplane.controlplane.usage import ProcessReading, ReplicaSlot
    from modelplane.core.gates import ArmStats, ShadowStats
    from modelplane.core.plan import EndpointPlan
    from modelplane.core.serving import VersionView
    from modelplane.dataplane.gateway import Gateway
    from modelplane.system.gateway_sums import GatewaySnapshots
    from modelplane.system.usage import LocalCluster

__all__ = [
    "GatewayConcurrency",
    "GatewayEvidence",
    "GatewayReplicas",
    "GatewaySlo",
    "GatewayTarget",
    "endpoint_load",
    "slo_counters",
]


def _view(gateway: Gateway, endpoint: str) -> EndpointView | None:
    return gateway.snapshot(endpoint).endpoint(endpoint)


class GatewayTarget:
    """The endpoint controller's ``ServingTarget``: plans go to the gateway as they are
    (the gateway serves the same :class:`EndpointPlan` the controller resolved)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def expect(self, endpoints: Collection[str]) -> None:
        self.gateway.expect(endpoints)

    async def put(self, plan: EndpointPlan) -> None:
        await self.gateway.put(plan)

    async def remove(self, endpoint: str) -> None:
        await self.gateway.remove(endpoint)

    def served(self, endpoint: str) -> ServedEndpoint | None:
        from modelplane.controlplane.endpoints import ServedEndpoint

        view = _view(self.gateway, endpoint)
        if view is None:
            return None
        return ServedEndpoint(
            routes=tuple((r.ref, r.version.label, r.weight) for r in view.routes),
            shadows=tuple((s.ref, s.version.label, s.percent) for s in view.shadows),
            ready=view.ready,
        )

    def replica_counts(self, endpoint: str) -> tuple[int, int]:
        """``(ready, total)`` replicas over the endpoint's routes."""
        view = _view(self.gateway, endpoint)
        if view is None:
            return 0, 0
        versions = [route.version for route in view.routes]
        return sum(v.ready_replicas for v in versions), sum(len(v.replicas) for v in versions)

    def pending_replicas(self, endpoint: str) -> list[str]:
        """``version#index: why`` for each replica of the endpoint's routes that is not
        ready for a reason its pool knows (placement left it pending)."""
        view = _view(self.gateway, endpoint)
        if view is None:
            return []
        return [
            f"{route.version.label}#{replica.index}: {replica.reason}"
            for route in view.routes
            for replica in route.version.replicas
            if replica.state is not ReplicaState.READY and replica.reason
        ]


class GatewayEvidence:
    """The rollout controller's ``RolloutEvidence``: each route's readiness and evidence."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _version(self, endpoint: str, model: str) -> VersionView | None:
        view = _view(self.gateway, endpoint)
        route = view.route(model) if view is not None else None
        return route.version if route is not None else None

    def route_ready(self, endpoint: str, model: str) -> bool:
        version = self._version(endpoint, model)
        return version is not None and version.ready

    def route_stats(self, endpoint: str, model: str) -> ArmStats | None:
        version = self._version(endpoint, model)
        return version.stats if version is not None else None

    def shadow_stats(self, endpoint: str, model: str) -> ShadowStats | None:
        view = _view(self.gateway, endpoint)
        shadow = view.shadow(model) if view is not None else None
        return shadow.comparison if shadow is not None else None


class GatewayConcurrency:
    """The autoscaler's and degrader's ``ConcurrencyEvidence``.

    In flight = rows queued in each route's batcher + batches out at its replicas times the
    mean rows per batch: the batcher counts rows and the pool counts batches, and one
    request is usually one row. Replicas are counted per route (each route runs the
    spec's ``replicas``), so the largest route speaks for the endpoint.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def load(self, endpoint: str) -> Load | None:
        view = _view(self.gateway, endpoint)
        return endpoint_load(view) if view is not None else None


def endpoint_load(view: EndpointView) -> Load:
    """One gateway's load of one endpoint (see :class:`GatewayConcurrency`)."""
    from modelplane.controlplane.autoscaler import Load

    in_flight, ready, replicas = 0.0, 0, 0
    for route in view.routes:
        version = route.version
        rows_per_batch = max(version.mean_batch_rows, 1.0)
        in_flight += version.queued_rows + version.outstanding_batches * rows_per_batch
        ready = max(ready, version.ready_replicas)
        replicas = max(replicas, len(version.replicas))
    return Load(in_flight, ready, replicas)


def slo_counters(snapshot: GatewaySnapshot) -> dict[str, EndpointCounters]:
    """Each endpoint's SLO tallies from what its callers saw.

    Counts the gateway's request counters, not the routes' evidence: shadow copies fill a
    version's route counters but never reach a caller. Available: an answer from a model
    (2xx that no fallback served). Unavailable: 5xx, 429 (shed) and fallback answers. Other
    4xx are the caller's mistake and count for neither.
    """
    from modelplane.controlplane.slo import EndpointCounters, Tally

    counters: dict[str, EndpointCounters] = {}
    for name, view in snapshot.endpoints.items():
        seen = view.counters
        good = total = 0
        for code, count in seen.by_status.items():
            if 400 <= code < 500 and code != 429:
                continue
            total += count
            if code < 400:
                good += count
        limit_s = view.slo.latency_ms / 1000.0
        fast = sum(hist.within(limit_s) for hist in seen.latency)
        timed = sum(hist.total for hist in seen.latency)
        # one counter set for the gateway's life: its counters only grow
        tally = Tally(max(good - seen.fallbacks, 0), total, fast, timed)
        counters[name] = EndpointCounters(view.slo, {"requests": tally})
    return counters


class GatewaySlo:
    """The SLO recorder's ``SloEvidence`` (see :func:`slo_counters`)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def served(self) -> dict[str, EndpointCounters]:
        return slo_counters(self.gateway.snapshot())


class GatewayReplicas:
    """The usage sampler's ``ReplicaSource``: every replica of every model version an
    endpoint reaches, by its routes or its shadows (each version once), that runs as a
    process of this gateway or that this gateway's pool placed on an execution backend.

    A hosted replica (Ray) is never read here: its pid is another machine's. It comes with
    its node and the reading its pool fetched from that node, so the sampler charges that
    node. One this gateway did not place (a gateway sharing replicas another placed) or that
    is placed nowhere yet holds nothing here and is left out."""

    def __init__(self, gateway: GatewaySnapshots, cluster: LocalCluster | None = None) -> None:
        self.gateway = gateway
        self.cluster = cluster

    def replicas(self) -> list[ReplicaSlot]:
        slots: list[ReplicaSlot] = []
        for view in self.gateway.snapshot().endpoints.values():
            refs = {id(r.version): r.ref for r in view.routes}
            for shadow in view.shadows:
                refs.setdefault(id(shadow.version), f"shadow:{shadow.ref}")
            for version in view.versions:
                slots += self._slots(view, refs[id(version)], version)
        return slots

    def _slots(self, view: EndpointView, route: str, version: VersionView) -> list[ReplicaSlot]:
        from modelplane.controlplane.usage import ReplicaSlot

        resources = version.resources
        gpu_model = self.cluster.gpu_model if self.cluster is not None else None
        slots: list[ReplicaSlot] = []
        for replica in version.replicas:
            node: str | None = None
            reading: ProcessReading | None = None
            if replica.hosted:
                if not replica.accounted:
                    continue
                node, reading = replica.node, _reading(replica)
            slots.append(
                ReplicaSlot(
                    endpoint=view.name,
                    route=route,
                    version=version.label,
                    replica=replica.index,
                    pid=replica.pid,
                    team=view.team,
                    tier=view.tier,
                    cpu_milli=max(1, round(resources.cpu * 1000)),
                    memory_mib=resources.memory_mb,
                    gpu_fraction=resources.gpus,
                    # this machine's GPU model names only this machine's GPUs
                    gpu_model=gpu_model if resources.gpus > 0 and node is None else None,
                    node=node,
                    reading=reading,
                )
            )
        return slots


def _reading(replica: ReplicaView) -> ProcessReading | None:
    """A hosted replica's reading, if it is of the process the replica runs now."""
    from modelplane.controlplane.usage import ProcessReading

    usage = replica.usage
    if usage is None or usage.pid != replica.pid:
        return None
    return ProcessReading(
        usage.cpu_seconds, usage.rss_mib, read_at=usage.read_at, age_s=usage.age_s
    )

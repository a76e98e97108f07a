"""The gateway's read-only snapshot (:class:`~modelplane.core.serving.GatewaySnapshot`).

Built on demand by the control side from the gateway's live objects, never on a request's
path: each call copies what it reads, so the live runtimes stay private to the data plane.
``only`` narrows it to one endpoint (controllers that ask per endpoint pay per endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping

from modelplane.core.backend import ReplicaState
from modelplane.core.circuit import BreakerState
from modelplane.core.serving import (
    EndpointView,
    GatewaySnapshot,
    LatencyCounts,
    ReplicaView,
    RequestCounters,
    RouteView,
    ShadowView,
    VersionView,
)
from modelplane.dataplane.endpoint_runtime import EndpointRuntime, ModelVersionRuntime
from modelplane.dataplane.metrics import GatewayMetrics

__all__ = ["build_snapshot"]


def build_snapshot(
    endpoints: Mapping[str, EndpointRuntime],
    metrics: GatewayMetrics,
    *,
    node: str,
    only: str | None = None,
) -> GatewaySnapshot:
    """What ``endpoints`` serve now; ``only``: just that endpoint (none if not served)."""
    if only is not None:
        runtime = endpoints.get(only)
        chosen = {} if runtime is None else {only: runtime}
    else:
        chosen = dict(endpoints)
    counters = _counters(metrics, frozenset(chosen))
    return GatewaySnapshot(
        {
            name: _endpoint(runtime, node, counters.get(name, RequestCounters()))
            for name, runtime in chosen.items()
        }
    )


def _endpoint(runtime: EndpointRuntime, node: str, counters: RequestCounters) -> EndpointView:
    spec = runtime.endpoint
    versions = {id(target): _version(target, node) for target in runtime.targets}
    weights = [route.weight for route in spec.routes]
    routes = tuple(
        RouteView(route.ref, weight, route.breaker.state is not BreakerState.CLOSED,
                  versions[id(route.target)])
        for route, weight in zip(runtime.routes, weights, strict=True)
    )  # fmt: skip
    shadows = tuple(
        ShadowView(shadow.ref, shadow.percent, versions[id(shadow.target)],
                   shadow.comparison.snapshot(), shadow.comparison.dropped)
        for shadow in runtime.shadows
    )  # fmt: skip
    return EndpointView(
        name=spec.name,
        team=spec.team,
        tier=spec.tier,
        slo=spec.contract.slo,
        routes=routes,
        shadows=shadows,
        versions=tuple(versions.values()),
        counters=counters,
    )


def _version(target: ModelVersionRuntime, node: str) -> VersionView:
    pool = target.pool
    replicas = tuple(
        ReplicaView(
            info.index,
            ReplicaState(info.state.value),
            info.node or node,
            info.pid,
            info.outstanding,
            info.reason,
            hosted=info.node is not None,
            accounted=info.accounted,
            usage=info.usage,
        )
        for info in pool.replicas()
    )
    batcher = target.batcher
    return VersionView(
        label=target.label,
        digest=target.source.digest,
        resources=target.source.manifest.resources,
        desired_replicas=pool.config.replicas,
        replicas=replicas,
        ready=target.ready,
        queued_rows=batcher.queued_rows,
        mean_batch_rows=batcher.mean_batch_rows,
        busy_seconds=batcher.busy_seconds,
        restarts=pool.restarts,
        stats=target.stats.snapshot(),
    )


def _counters(metrics: GatewayMetrics, names: frozenset[str]) -> dict[str, RequestCounters]:
    by_status: dict[str, dict[int, int]] = {}
    for (endpoint, _, _, status), count in list(metrics.requests.items()):
        if endpoint in names:
            statuses = by_status.setdefault(endpoint, {})
            statuses[int(status)] = statuses.get(int(status), 0) + count
    fallbacks: dict[str, int] = {}
    for (endpoint, _), count in list(metrics.fallbacks.items()):
        if endpoint in names:
            fallbacks[endpoint] = fallbacks.get(endpoint, 0) + count
    latency: dict[str, list[LatencyCounts]] = {}
    for (endpoint, _, _), hist in list(metrics.latency.items()):
        if endpoint in names:
            counts = LatencyCounts(tuple(hist.bounds), tuple(hist.counts))
            latency.setdefault(endpoint, []).append(counts)
    return {
        name: RequestCounters(
            by_status.get(name, {}), fallbacks.get(name, 0), tuple(latency.get(name, ()))
        )
        for name in names
    }

"""The snapshot's values: readiness over routes that take traffic, replica counts by enum,
latency buckets within an objective, lookups by ref."""

from __future__ import annotations

from modelplane.core.gates import ArmStats, ShadowStats
from modelplane.core.serving import (
    EndpointView,
    GatewaySnapshot,
    LatencyCounts,
    ReplicaState,
    ReplicaView,
    RequestCounters,
    RouteView,
    ShadowView,
    VersionView,
)
from modelplane.spec.contract import SLO
from modelplane.spec.manifest import Resources
from modelplane.types import Digest


def version(label: str, *states: ReplicaState, outstanding: int = 0) -> VersionView:
    replicas = tuple(
        ReplicaView(i, state, "node-a", 100 + i, outstanding) for i, state in enumerate(states)
    )
    return VersionView(
        label=label, digest=Digest("sha256:" + "0" * 64), resources=Resources(),
        desired_replicas=len(states), replicas=replicas,
        ready=ReplicaState.READY in states, queued_rows=0, mean_batch_rows=0.0,
        busy_seconds=0.0, restarts=0, stats=ArmStats(),
    )  # fmt: skip


def endpoint(routes: tuple[RouteView, ...], shadows: tuple[ShadowView, ...] = ()) -> EndpointView:
    versions = tuple({id(v): v for v in [r.version for r in routes]}.values())
    return EndpointView(
        name="fraud", team="risk", tier="critical", slo=SLO(), routes=routes, shadows=shadows,
        versions=versions, counters=RequestCounters(),
    )  # fmt: skip


def test_replicas_are_counted_by_state() -> None:
    v = version("fraud:1", ReplicaState.READY, ReplicaState.DEAD, ReplicaState.READY,
                outstanding=2)  # fmt: skip
    assert v.ready_replicas == 2
    assert v.outstanding_batches == 6


def test_an_endpoint_is_ready_when_every_route_with_traffic_is() -> None:
    stable = version("fraud:1", ReplicaState.READY)
    starting = version("fraud:2", ReplicaState.STARTING)
    # a canary at weight 0 that is still starting does not hold the endpoint back
    warming = endpoint((RouteView("fraud:1", 100, False, stable),
                        RouteView("fraud:2", 0, False, starting)))  # fmt: skip
    assert warming.ready
    moved = endpoint((RouteView("fraud:1", 95, False, stable),
                      RouteView("fraud:2", 5, False, starting)))  # fmt: skip
    assert not moved.ready
    assert moved.route("fraud:2") is moved.routes[1]
    assert moved.route("fraud:3") is None
    assert moved.shadow("fraud:2") is None


def test_shadows_are_found_by_ref() -> None:
    stable = version("fraud:1", ReplicaState.READY)
    copy = ShadowView("fraud:2", 10.0, version("fraud:2", ReplicaState.READY),
                      ShadowStats(4, 1, 0.0), dropped=0)  # fmt: skip
    view = endpoint((RouteView("fraud:1", 100, False, stable),), (copy,))
    assert view.shadow("fraud:2") is copy
    assert GatewaySnapshot({"fraud": view}).endpoint("fraud") is view
    assert GatewaySnapshot().endpoint("fraud") is None


def test_latency_within_an_objective_counts_buckets_at_or_under_it() -> None:
    hist = LatencyCounts((0.01, 0.05, 0.1), (3, 4, 2, 1))  # the last bucket is +Inf
    assert hist.within(0.05) == 7
    assert hist.within(0.2) == 9  # +Inf never counts as within
    assert hist.within(0.001) == 0
    assert hist.total == 10

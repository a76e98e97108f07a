"""Evidence summed over gateways (no servers): counts and histograms add; a gateway that
restarts, or drops a route and takes it back, never makes a sum go down; a gateway that
died keeps its counts but stops counting toward load and readiness; SLO counter sets stay
one per gateway incarnation."""

from __future__ import annotations

import socket

import pytest

from modelplane.controlplane.rollout_records import diff_arm
from modelplane.core.drift import Histogram
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
from modelplane.errors import Conflict, InvalidSpec
from modelplane.spec.contract import SLO
from modelplane.spec.manifest import Resources
from modelplane.system.gateway_sums import (
    GatewayReading,
    GatewaySums,
    SummedConcurrency,
    SummedEvidence,
    SummedSlo,
    UsageView,
    add_arms,
    add_histograms,
)
from modelplane.system.gateway_views import GatewayReplicas
from modelplane.system.gateways import reuseport_socket
from modelplane.system.live import SystemOptions
from modelplane.types import Digest

BOUNDS = (10.0, 100.0, float("inf"))


def arm(requests: int, errors: int = 0, *, fast: int | None = None) -> ArmStats:
    fast = requests if fast is None else fast
    return ArmStats(
        requests, errors, Histogram(BOUNDS, (fast, requests - fast, 0)),
        labels={"label": {"1": requests}},
    )  # fmt: skip


def version(
    label: str, stats: ArmStats, *, ready: bool = True, replicas: int = 1, queued: int = 0
) -> VersionView:
    state = ReplicaState.READY if ready else ReplicaState.STARTING
    return VersionView(
        label=label, digest=Digest("sha256:" + "0" * 64), resources=Resources(),
        desired_replicas=replicas,
        replicas=tuple(ReplicaView(i, state, "node-a", 100 + i, 0) for i in range(replicas)),
        ready=ready, queued_rows=queued, mean_batch_rows=1.0, busy_seconds=0.0, restarts=0,
        stats=stats,
    )  # fmt: skip


def snapshot(
    stable: ArmStats,
    canary: ArmStats | None = None,
    *,
    shadow: ShadowStats | None = None,
    ready: bool = True,
    replicas: int = 1,
    queued: int = 0,
    answered: int = 0,
) -> GatewaySnapshot:
    routes = [RouteView("fraud:1", 90, False, version("fraud:1", stable, replicas=replicas,
                                                        queued=queued))]  # fmt: skip
    if canary is not None:
        routes.append(
            RouteView(
                "fraud:2", 10, False, version("fraud:2", canary, ready=ready, replicas=replicas)
            )
        )
    shadows: tuple[ShadowView, ...] = ()
    if shadow is not None:
        copy = version("fraud:3", ArmStats())
        shadows = (ShadowView("fraud:3", 10.0, copy, shadow, dropped=0),)
    counters = RequestCounters({200: answered}, 0, (LatencyCounts((0.05, 0.1), (answered, 0, 0)),))
    view = EndpointView(
        name="fraud", team="risk", tier="standard", slo=SLO(), routes=tuple(routes),
        shadows=shadows, versions=tuple(r.version for r in routes), counters=counters,
    )  # fmt: skip
    return GatewaySnapshot({"fraud": view})


class Primary:
    """The ``up`` process's gateway, as the sums read it."""

    def __init__(self, snap: GatewaySnapshot) -> None:
        self.snap = snap

    def snapshot(self, endpoint: str | None = None) -> GatewaySnapshot:
        return self.snap


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sums_of(primary: GatewaySnapshot) -> tuple[GatewaySums, Primary, Clock]:
    gateway, clock = Primary(primary), Clock()
    return GatewaySums(gateway, stale_after_s=3.0, clock=clock), gateway, clock


def child(sums: GatewaySums, clock: Clock, snap: GatewaySnapshot, *, pid: int = 500) -> None:
    sums.observe(GatewayReading(2, pid, snap, clock.now))


def test_counts_histograms_and_labels_add() -> None:
    total = add_arms(arm(3, 1, fast=2), arm(5, 0))
    assert (total.requests, total.errors) == (8, 1)
    assert total.latency_ms == Histogram(BOUNDS, (7, 1, 0))
    assert total.labels == {"label": {"1": 8}}
    # bins that differ are never added into a wrong histogram: the fuller one stands
    other = Histogram((1.0, float("inf")), (9, 0))
    assert add_histograms(Histogram(BOUNDS, (1, 0, 0)), other) == other
    assert add_histograms(None, other) == other


def test_the_evidence_of_a_route_is_summed_over_gateways() -> None:
    sums, _, clock = sums_of(snapshot(arm(10), arm(4, 1)))
    child(sums, clock, snapshot(arm(6), arm(5, 0)))
    evidence = SummedEvidence(sums)
    canary = evidence.route_stats("fraud", "fraud:2")
    assert canary is not None
    assert (canary.requests, canary.errors) == (9, 1)
    stable = evidence.route_stats("fraud", "fraud:1")
    assert stable is not None
    assert stable.requests == 16
    assert evidence.route_stats("fraud", "fraud:9") is None
    assert evidence.route_stats("other", "fraud:1") is None


def test_a_restarted_gateway_never_takes_counts_back() -> None:
    sums, primary, clock = sums_of(snapshot(arm(10), arm(4)))
    child(sums, clock, snapshot(arm(6), arm(5)))
    evidence = SummedEvidence(sums)
    baseline = evidence.route_stats("fraud", "fraud:2")
    # the child is killed and comes back counting from zero: what it counted stays
    child(sums, clock, snapshot(arm(0), arm(2)), pid=501)
    now = evidence.route_stats("fraud", "fraud:2")
    assert now is not None
    assert now.requests == 4 + 5 + 2
    # so the step's window holds exactly what was counted since its baseline
    assert diff_arm(now, baseline).requests == 2
    # the primary drops the route and takes it back (counters from zero): same rule
    primary.snap = snapshot(arm(10), arm(1))
    again = evidence.route_stats("fraud", "fraud:2")
    assert again is not None
    assert again.requests == 4 + 1 + 5 + 2


def test_a_new_incarnation_with_more_counts_still_banks_the_old_ones() -> None:
    sums, _, clock = sums_of(snapshot(arm(0), arm(0)))
    child(sums, clock, snapshot(arm(0), arm(3)))
    child(sums, clock, snapshot(arm(0), arm(7)), pid=501)  # restarted, and busy already
    canary = SummedEvidence(sums).route_stats("fraud", "fraud:2")
    assert canary is not None
    assert canary.requests == 10


def test_shadow_comparisons_are_summed() -> None:
    sums, _, clock = sums_of(snapshot(arm(1), shadow=ShadowStats(4, 1, 0.5)))
    child(sums, clock, snapshot(arm(1), shadow=ShadowStats(6, 2, 0.25)))
    assert SummedEvidence(sums).shadow_stats("fraud", "fraud:3") == ShadowStats(10, 3, 0.75)
    assert SummedEvidence(sums).shadow_stats("fraud", "fraud:2") is None


def test_a_route_is_ready_when_every_live_gateway_has_it_ready() -> None:
    sums, _, clock = sums_of(snapshot(arm(1), arm(0)))
    evidence = SummedEvidence(sums)
    child(sums, clock, snapshot(arm(1), arm(0), ready=False))
    assert not evidence.route_ready("fraud", "fraud:2")
    # a child that stopped reporting is stale: it holds nothing back
    clock.now += 5
    assert evidence.route_ready("fraud", "fraud:2")
    assert not evidence.route_ready("fraud", "fraud:9")


def test_load_is_one_gateways_share_and_stale_gateways_leave_it() -> None:
    sums, _, clock = sums_of(snapshot(arm(0), queued=6, replicas=2))
    concurrency = SummedConcurrency(sums)
    child(sums, clock, snapshot(arm(0), queued=2, replicas=2))
    load = concurrency.load("fraud")
    assert load is not None
    assert (load.concurrency, load.ready_replicas, load.replicas) == (4, 2, 2)
    # a gateway that has not caught up with a replica change: no agreed count
    child(sums, clock, snapshot(arm(0), queued=2, replicas=1))
    load = concurrency.load("fraud")
    assert load is not None
    assert (load.ready_replicas, load.replicas) == (1, -1)
    clock.now += 5
    load = concurrency.load("fraud")
    assert load is not None
    assert (load.concurrency, load.replicas) == (6, 2)
    assert concurrency.load("other") is None


def test_slo_counter_sets_are_one_per_gateway_incarnation() -> None:
    sums, _, clock = sums_of(snapshot(arm(0), answered=10))
    slo = SummedSlo(sums)
    child(sums, clock, snapshot(arm(0), answered=5))
    child(sums, clock, snapshot(arm(0), answered=2), pid=501)
    clock.now += 5  # the new child is stale too: its counts stay, as the dead one's
    tallies = slo.served()["fraud"].tallies
    assert {k: t.avail_total for k, t in tallies.items()} == {
        "requests@1.0": 10, "requests@2.500": 5, "requests@2.501": 2,
    }  # fmt: skip


def test_usage_counts_every_live_gateways_workers_apart() -> None:
    sums, _, clock = sums_of(snapshot(arm(0), arm(0), replicas=2))
    child(sums, clock, snapshot(arm(0), arm(0), replicas=2))
    slots = GatewayReplicas(UsageView(sums)).replicas()
    keys = sorted((s.route, s.replica) for s in slots)
    assert keys == [(ref, n) for ref in ("fraud:1", "fraud:2") for n in (0, 1, 1000, 1001)]
    assert len({s.key for s in slots}) == 8
    clock.now += 5  # a gateway that stopped reporting has no workers to sample
    assert len(GatewayReplicas(UsageView(sums)).replicas()) == 4


def test_gateways_are_at_least_one() -> None:
    with pytest.raises(InvalidSpec, match="--gateways"):
        SystemOptions(gateways=0)
    # on Ray the child gateways share the replicas up's own gateway places
    shared = SystemOptions(gateways=2, backend="ray", ray_address="127.0.0.1:6379")
    assert shared.gateways == 2
    assert not shared.attached


def test_gateway_sockets_share_a_port() -> None:
    first = reuseport_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = reuseport_socket("127.0.0.1", port)
        second.close()
        plain = socket.socket()
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
        plain.close()
    finally:
        first.close()
    # a port held by a process that does not share it: a clear error, naming the flag
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(Conflict, match="--port"):
            reuseport_socket("127.0.0.1", held.getsockname()[1])

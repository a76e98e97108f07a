"""One scheduling cycle over a snapshot, and ``why`` over its decisions."""

from __future__ import annotations

from modelplane.core.cluster import Demand, Workload, WorkloadKind
from modelplane.core.why import replay, why
from modelplane.spec.policy import Policy, Quota, Team

from .sched_builders import ClusterBuilder


def replica(name: str, *, cpu: int = 1000, team: str = "risk", tier: str = "standard") -> Workload:
    return Workload(name, Demand(cpu, 512), team=team, tier=tier, kind=WorkloadKind.REPLICA)


def test_places_what_fits_and_says_why_the_rest_waits() -> None:
    cluster = ClusterBuilder().node("a", cpu=2000).node("b", cpu=1000).build()
    pending = [replica("x/0"), replica("x/1"), replica("x/2"), replica("x/3")]
    result = replay(pending, cluster, Policy(), 0.0)
    assert sorted(r.name for r in result.running) == ["x/0", "x/1", "x/2"]
    assert why("x/0", result.decisions).startswith("x/0 is placed on ")
    assert why("x/3", result.decisions) == ("x/3 is pending: no node fits (2 nodes: 2 lack cpu)")
    assert int(result.cluster.cpu_free.sum()) == 0


def test_higher_tiers_are_placed_first() -> None:
    cluster = ClusterBuilder().node("a", cpu=1000).build()
    result = replay([replica("b/0", tier="batch"), replica("c/0", tier="critical")],
                    cluster, Policy(), 0.0)  # fmt: skip
    assert [r.name for r in result.running] == ["c/0"]
    assert why("b/0", result.decisions).startswith("b/0 is pending: no node fits")


def test_quota_keeps_replicas_pending_admission() -> None:
    policy = Policy(
        teams=(Team(name="risk", quotas={"cpu": Quota(nominal=1000, borrowing_limit=0)}),),
    )
    cluster = ClusterBuilder().node("a", cpu=8000).build()
    result = replay([replica("x/0"), replica("x/1")], cluster, policy, 0.0)
    assert [r.name for r in result.running] == ["x/0"]
    assert why("x/1", result.decisions) == (
        "x/1 is pending admission: cpu: 1000 asked + 1000 in use would exceed team risk's"
        " limit 1000"
    )


def test_paused_tiers_wait() -> None:
    cluster = ClusterBuilder().node("a").build()
    result = replay([replica("b/0", tier="batch")], cluster, Policy(), 0.0,
                    paused_tiers=frozenset({"batch"}))  # fmt: skip
    assert result.running == ()
    assert why("b/0", result.decisions) == "b/0 is pending admission: admission of batch is paused"

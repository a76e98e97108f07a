"""The job queue's pure decisions: order, quota, room, serving first, degradation, elasticity."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.cluster import Demand, Workload, WorkloadKind
from modelplane.core.jobqueue import (
    QueueDecision,
    QueuedJob,
    QueueSnapshot,
    QueueState,
    RunningShard,
    StopReason,
    decide,
)
from modelplane.spec.policy import Policy

from . import jobqueue_reference as reference
from .admission_strategies import capacities, policies, queued_jobs, workloads
from .sched_builders import PolicyBuilder

CPU = {"cpu": 8000, "memory": 65_536, "gpu": 0}
ONE_CORE = Demand(cpu_milli=1000, memory_mib=1024)


def queued(
    name: str,
    *,
    team: str = "a",
    tier: str = "batch",
    at: float = 0.0,
    ready: int = 4,
    lo: int = 1,
    hi: int = 4,
    running: tuple[RunningShard, ...] = (),
    demand: Demand = ONE_CORE,
    blocked: str | None = None,
) -> QueuedJob:
    return QueuedJob(name, team, tier, at, demand, lo, hi, ready, running, blocked)


def replica(name: str, cpu: int, *, tier: str = "critical", team: str = "web") -> Workload:
    demand = Demand(cpu_milli=cpu, memory_mib=512)
    return Workload(name, demand, team=team, tier=tier, kind=WorkloadKind.REPLICA)


def one_pass(
    jobs: list[QueuedJob],
    policy: Policy | None = None,
    *,
    capacity: dict[str, int] | None = None,
    serving: tuple[Workload, ...] = (),
    paused: frozenset[str] = frozenset(),
    preempt_borrowed: frozenset[str] = frozenset(),
    now: float = 100.0,
) -> QueueDecision:
    snapshot = QueueSnapshot(tuple(jobs), capacity or CPU, serving, paused, preempt_borrowed)
    decision, _ = decide(snapshot, policy or Policy(), now, QueueState())
    return decision


def started(decision: QueueDecision) -> dict[str, int]:
    return {s.job: s.count for s in decision.starts}


def test_a_job_grows_to_its_maximum_while_capacity_is_free() -> None:
    assert started(one_pass([queued("j", hi=3, ready=10)])) == {"j": 3}


def test_ready_shards_bound_growth() -> None:
    assert started(one_pass([queued("j", hi=8, ready=2)])) == {"j": 2}


def test_every_jobs_minimum_comes_before_anyones_growth() -> None:
    jobs = [queued("early", at=1, hi=8, ready=8), queued("late", at=2, lo=2, hi=8)]
    assert started(one_pass(jobs)) == {"early": 6, "late": 2}


def test_tier_then_submit_time_orders_the_queue() -> None:
    jobs = [
        queued("old-batch", at=1, lo=4, hi=4),
        queued("new-standard", tier="standard", at=5, lo=4, hi=4),
        queued("new-batch", at=3, lo=4, hi=4),
    ]
    decision = one_pass(jobs, capacity={"cpu": 8000, "memory": 65_536})
    assert started(decision) == {"new-standard": 4, "old-batch": 4}
    assert decision.waiting["new-batch"].startswith("waiting for capacity")


def test_a_gang_starts_whole_or_not_at_all() -> None:
    decision = one_pass([queued("big", lo=3, hi=3)], capacity={"cpu": 2000, "memory": 8192})
    assert started(decision) == {}
    assert "3 shard(s) need 1000m CPU more" in decision.waiting["big"]


def test_a_team_at_its_quota_waits_with_the_reason() -> None:
    policy = PolicyBuilder().team("a", resource="cpu", nominal=2000, borrow=0).build()
    decision = one_pass(
        [queued("j", hi=4, running=(RunningShard(0, 0.0), RunningShard(1, 0.0)))], policy
    )
    assert started(decision) == {}
    jobs = [
        queued("k", hi=4, running=(RunningShard(0, 0.0), RunningShard(1, 0.0))),
        queued("w", at=1),
    ]
    decision = one_pass(jobs, policy)
    # what is asked and what is already used, not their sum, and the team once
    assert decision.waiting["w"] == (
        "waiting for quota: cpu: 1000 asked + 2000 in use would exceed team a's limit 2000"
    )


def test_borrowing_is_marked_and_the_lender_reclaims_it() -> None:
    policy = (
        PolicyBuilder()
        .team("a", resource="cpu", nominal=2000)
        .team("b", resource="cpu", nominal=4000)
        .build()
    )
    first = one_pass([queued("a-job", team="a", hi=4)], policy)
    assert first.starts[0].borrowed == (False, False, True, True)
    borrowing = tuple(RunningShard(i, 10.0 * i, borrowed=i >= 2) for i in range(4))
    jobs = [
        queued("a-job", team="a", hi=4, ready=4, running=borrowing),
        queued("b-job", team="b", at=5, lo=4, hi=4),
    ]
    second = one_pass(jobs, policy)
    assert {(s.job, s.index, s.reason) for s in second.stops} == {
        ("a-job", 2, StopReason.RECLAIM),
        ("a-job", 3, StopReason.RECLAIM),
    }


def test_serving_preempts_borrowed_batch_first_losing_the_least_work() -> None:
    shards = (
        RunningShard(0, 10.0),
        RunningShard(1, 90.0, borrowed=True),
        RunningShard(2, 50.0, borrowed=True),
    )
    jobs = [queued("j", ready=0, running=shards)]
    decision = one_pass(
        jobs, capacity={"cpu": 4000, "memory": 65_536}, serving=(replica("r", 2000),)
    )
    assert [(s.index, s.reason) for s in decision.stops] == [(1, StopReason.SERVING)]
    assert decision.stops[0].work_lost == 10.0 * 1000 / 100_000


def test_serving_never_takes_a_critical_job_or_goes_below_a_floor() -> None:
    policy = PolicyBuilder().floor(2000, tier="batch").build()
    policy = Policy.model_validate(
        {**policy.model_dump(), "floors": [{"tier": "batch", "resource": "cpu", "amount": 2000}]}
    )
    jobs = [
        queued("crit", tier="critical", ready=0, running=(RunningShard(0, 0.0),)),
        queued("b", ready=0, running=(RunningShard(0, 0.0), RunningShard(1, 0.0))),
    ]
    capacity = {"cpu": 3000, "memory": 65_536}
    decision = one_pass(jobs, policy, capacity=capacity, serving=(replica("r", 2000),))
    assert decision.stops == ()


def test_degradation_pauses_admission_and_preempts_borrowed_batch() -> None:
    batch = frozenset({"batch"})
    paused = one_pass([queued("j")], paused=batch)
    assert started(paused) == {}
    assert "admission of batch is paused" in paused.waiting["j"]
    shards = (RunningShard(0, 0.0), RunningShard(1, 0.0, borrowed=True))
    stopped = one_pass([queued("j", ready=0, running=shards)], preempt_borrowed=batch)
    assert [(s.index, s.reason) for s in stopped.stops] == [(1, StopReason.DEGRADED)]


def test_a_job_above_its_minimum_shrinks_for_a_waiting_gang() -> None:
    wide = tuple(RunningShard(i, 10.0 * i) for i in range(8))
    jobs = [queued("wide", hi=8, ready=4, running=wide), queued("new", at=5, lo=2, hi=2)]
    decision = one_pass(jobs)
    # the two newest shards lose the least work
    assert sorted((s.index, s.reason) for s in decision.stops) == [
        (6, StopReason.SHRINK),
        (7, StopReason.SHRINK),
    ]
    assert decision.waiting["new"] == "waiting for 2 shard(s) of other jobs to stop"
    after = (*wide[:6],)
    regrown = one_pass(
        [queued("wide", hi=8, ready=4, running=after), queued("new", at=5, lo=2, hi=2)]
    )
    assert started(regrown) == {"new": 2}


def test_a_job_never_shrinks_below_its_minimum_or_for_a_lower_tier() -> None:
    wide = tuple(RunningShard(i, 0.0) for i in range(8))
    low = one_pass([queued("wide", tier="standard", hi=8, running=wide), queued("new", lo=2)])
    assert low.stops == ()
    at_min = one_pass([queued("wide", lo=8, hi=8, running=wide), queued("new", at=5, lo=2)])
    assert at_min.stops == ()


def test_a_blocked_job_waits_with_its_reason() -> None:
    decision = one_pass([queued("j", blocked="over its budget of 5 USD")])
    assert decision.waiting == {"j": "over its budget of 5 USD"}


def test_waiting_time_is_kept_from_the_first_pass() -> None:
    snapshot = QueueSnapshot((queued("j", lo=9, hi=9, ready=9),), CPU)
    _, state = decide(snapshot, Policy(), 10.0, QueueState())
    _, state = decide(snapshot, Policy(), 20.0, state)
    assert state.pending_since == {"j": 10.0}


def test_one_pass_over_ten_thousand_pending_jobs_is_well_under_a_second() -> None:
    policy = (
        PolicyBuilder()
        .team("a", resource="cpu", nominal=4000)
        .team("b", resource="cpu", nominal=4000)
        .build()
    )
    jobs = [
        queued(f"j{i}", team="ab"[i % 2], at=float(i), lo=1 + i % 2, hi=4, ready=10)
        for i in range(10_000)
    ]
    snapshot = QueueSnapshot(tuple(jobs), CPU)
    began = time.perf_counter()
    decision, _ = decide(snapshot, policy, 0.0, QueueState())
    elapsed = time.perf_counter() - began
    assert sum(s.count for s in decision.starts) == 8  # the two teams' 8 cores
    assert len(decision.waiting) == 10_000 - len(decision.starts)
    # about 0.2 s on a quiet core; generous for a shared, loaded CI machine
    assert elapsed < 3.0, f"one pass took {elapsed:.2f}s"


@settings(max_examples=100, deadline=None)
@given(
    policy=policies(),
    jobs=queued_jobs(),
    capacity=capacities(),
    serving=workloads("replica", 2),
    paused=st.sampled_from((frozenset(), frozenset(), frozenset({"batch"}))),
    preempt=st.sampled_from((frozenset(), frozenset(), frozenset({"batch", "adhoc"}))),
)
def test_the_pass_decides_as_the_slow_reference(
    policy: Policy,
    jobs: list[QueuedJob],
    capacity: dict[str, int],
    serving: list[Workload],
    paused: frozenset[str],
    preempt: frozenset[str],
) -> None:
    # Serving first, degradation, gangs, growth, reclaim and shrink over the fast admission
    # must start, stop and explain exactly what the pass over the slow one did.
    snapshot = QueueSnapshot(tuple(jobs), capacity, tuple(serving), paused, preempt)
    state = QueueState({"j0": 1.0})
    assert decide(snapshot, policy, 100.0, state) == reference.decide(
        snapshot, policy, 100.0, state
    )


def test_the_pass_at_depth_decides_as_the_slow_reference() -> None:
    rng = random.Random(14)
    builder = PolicyBuilder()
    for i in range(8):
        builder.team(f"t{i}", cohort=f"c{i % 2}", resource="cpu", nominal=6000, lend=3000)
    jobs = [
        queued(f"j{i}", team=f"t{rng.randrange(9)}", tier=rng.choice(("batch", "standard")),
               at=float(i), lo=rng.randint(1, 3), hi=6, ready=rng.randint(0, 6),
               running=tuple(RunningShard(k, float(k), i % 2 == 0) for k in range(i % 3))
               if i < 40 else ())
        for i in range(2000)
    ]  # fmt: skip
    snapshot = QueueSnapshot(tuple(jobs), {"cpu": 60_000, "memory": 10**6})
    fast, _ = decide(snapshot, builder.build(), 100.0, QueueState())
    slow, _ = reference.decide(snapshot, builder.build(), 100.0, QueueState())
    assert fast == slow
    assert fast.starts
    assert fast.stops

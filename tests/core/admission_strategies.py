"""Random policies and snapshots for comparing admission and the job queue with their slow
references (``admission_reference``, ``jobqueue_reference``): small enough that every
cohort fills up, borrows, lends and reclaims."""

from __future__ import annotations

from hypothesis import strategies as st

from modelplane.core.admission import Admitted
from modelplane.core.cluster import GPU_MILLI, Demand, Workload, WorkloadKind
from modelplane.core.jobqueue import QueuedJob, RunningShard
from modelplane.spec.policy import (
    Floor,
    PlacementPolicy,
    PlacementStrategy,
    Policy,
    PreemptionPolicy,
    Quota,
    Team,
)

__all__ = [
    "TEAMS",
    "TIERS",
    "admitted_items",
    "capacities",
    "demands",
    "policies",
    "queued_jobs",
    "workloads",
]

TEAMS = ("t0", "t1", "t2", "t3", "zz")
"""``zz`` is never in a policy: an unknown team."""
TIERS = ("critical", "standard", "batch", "adhoc")
"""``adhoc`` is no tier of the policy: lowest priority, preemptible."""
RESOURCES = ("cpu", "memory", "gpu", "gpu/A10")


@st.composite
def quotas(draw: st.DrawFn) -> Quota:
    nominal = draw(st.integers(0, 8)) * 1000
    lend = draw(st.none() | st.integers(0, nominal // 500).map(lambda n: n * 500))
    borrow = draw(st.none() | st.integers(0, 6).map(lambda n: n * 1000))
    return Quota(nominal=nominal, borrowing_limit=borrow, lending_limit=lend)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    teams = []
    for name in TEAMS[: draw(st.sampled_from((0, 2, 3, 4, 4)))]:
        resources = draw(st.sets(st.sampled_from(RESOURCES), min_size=1, max_size=3))
        teams.append(
            Team(
                name=name,
                cohort=draw(st.sampled_from((None, "c0", "c0", "c0", "c1"))),
                quotas={r: draw(quotas()) for r in sorted(resources)},
            )
        )
    floors = draw(
        st.lists(
            st.builds(
                Floor,
                tier=st.sampled_from(("batch", "standard")),
                team=st.sampled_from((None, "t0", "t1")),
                resource=st.sampled_from(("cpu", "gpu")),
                amount=st.integers(0, 4).map(lambda n: n * 1000),
            ),
            max_size=2,
        )
    )
    strategy = draw(st.sampled_from((PlacementStrategy.MOST_ALLOCATED, PlacementStrategy.DRF)))
    return Policy(
        teams=tuple(teams),
        admit_unknown_teams=draw(st.booleans()),
        floors=tuple(f for f in floors if f.team is None or f.team in {t.name for t in teams}),
        placement=PlacementPolicy(strategy=strategy),
        preemption=PreemptionPolicy(reclaim_borrowed=draw(st.booleans())),
    )


@st.composite
def demands(draw: st.DrawFn) -> Demand:
    gpus = draw(st.sampled_from((0, 1, 1, 2)))
    milli = GPU_MILLI if gpus != 1 else draw(st.sampled_from((250, 500, GPU_MILLI)))
    return Demand(
        cpu_milli=draw(st.sampled_from((0, 500, 1000, 3000))),
        memory_mib=draw(st.sampled_from((0, 1024, 4096))),
        gpus=gpus,
        gpu_milli=milli if gpus else 0,
        gpu_models=draw(st.sampled_from((frozenset(), frozenset({"A10"})))),
    )


def workloads(prefix: str, max_size: int) -> st.SearchStrategy[list[Workload]]:
    one = st.tuples(
        demands(),
        st.sampled_from(("t0", "t0", "t1", "t1", "t2", "t3", "zz")),
        st.sampled_from(TIERS),
        st.integers(0, 5).map(float),
        st.sampled_from(tuple(WorkloadKind)),
    )
    return st.lists(one, max_size=max_size).map(
        lambda items: [
            Workload(f"{prefix}{i}", demand, team, tier, kind, at)
            for i, (demand, team, tier, at, kind) in enumerate(items)
        ]
    )


def admitted_items(max_size: int) -> st.SearchStrategy[list[Admitted]]:
    """Work holding quota, some of it borrowed (what reclaim may evict)."""
    flags = st.lists(st.booleans(), min_size=max_size, max_size=max_size)
    return st.tuples(workloads("a", max_size), flags).map(
        lambda drawn: [Admitted(w, borrowed=drawn[1][i]) for i, w in enumerate(drawn[0])]
    )


@st.composite
def queued_jobs(draw: st.DrawFn) -> list[QueuedJob]:
    """Jobs waiting, running (some on borrowed quota), growing, blocked, of every tier."""
    out = []
    for i in range(draw(st.integers(0, 10))):
        low = draw(st.integers(1, 3))
        running = draw(st.integers(0, 3))
        out.append(
            QueuedJob(
                f"j{i}",
                draw(st.sampled_from(("t0", "t0", "t1", "t1", "t2", "t3", "zz"))),
                draw(st.sampled_from(TIERS)),
                float(draw(st.integers(0, 5))),
                draw(demands()),
                min_shards=low,
                max_shards=low + draw(st.integers(0, 3)),
                ready=draw(st.integers(0, 5)),
                running=tuple(
                    RunningShard(k, float(draw(st.integers(0, 90))), draw(st.booleans()))
                    for k in range(running)
                ),
                blocked=draw(st.sampled_from((None, None, None, "over its budget"))),
            )
        )
    return out


@st.composite
def capacities(draw: st.DrawFn) -> dict[str, int]:
    return {
        "cpu": draw(st.integers(0, 40)) * 1000,
        "memory": draw(st.integers(0, 32)) * 4096,
        "gpu": draw(st.integers(0, 12)) * 1000,
        "gpu/A10": draw(st.integers(0, 4)) * 1000,
    }

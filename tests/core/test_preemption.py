from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.cluster import ClusterSnapshot, Running, Workload
from modelplane.core.placement import choose_slots
from modelplane.core.preemption import (
    PreemptionRequest,
    PreemptionState,
    floor_holdings,
    preempt,
    work_lost,
)
from modelplane.spec.policy import Policy

from .sched_builders import ClusterBuilder, PolicyBuilder, job, running


def _full_node(*items: Running) -> tuple[ClusterSnapshot, tuple[Running, ...]]:
    cluster = ClusterBuilder().node(gpus=4).build()
    for item in items:
        cluster = cluster.bind(item.workload.demand, item.binding)
    return cluster, items


def _victims(
    items: tuple[Running, ...],
    preemptor: Workload,
    policy: Policy | None = None,
    *,
    borrowing: bool = False,
    state: PreemptionState | None = None,
) -> list[str]:
    cluster, running_ = _full_node(*items)
    decision, _ = preempt(
        PreemptionRequest(cluster, running_, preemptor, borrowing),
        policy or Policy(),
        100.0,
        state or PreemptionState(),
    )
    return [v.name for v in decision.victims]


def _on(name: str, slot: int, tier: str, **kwargs: object) -> Running:
    return running(job(name, gpus=1, tier=tier), 0, (slot,), **kwargs)  # type: ignore[arg-type]


CASES = [
    (
        "lowest tier first",
        (
            _on("s", 0, "standard"),
            _on("b", 1, "batch"),
            _on("c", 2, "critical"),
            _on("b2", 3, "batch", started=1.0),
        ),
        job("new", gpus=1, tier="critical"),
        ["b2"],
    ),
    (
        "least work lost",
        (
            _on("old", 0, "batch", started=0.0),
            _on("fresh", 1, "batch", started=90.0),
            _on("ckpt", 2, "batch", started=0.0, checkpointed=95.0),
            _on("x", 3, "batch", started=0.0),
        ),
        job("new", gpus=1, tier="standard"),
        ["ckpt"],
    ),
    (
        "borrowed before owned",
        (
            _on("own", 0, "batch", started=99.0),
            _on("lent", 1, "batch", borrowed=True),
            _on("c1", 2, "critical"),
            _on("c2", 3, "critical"),
        ),
        job("new", gpus=1, tier="standard"),
        ["lent"],
    ),
    (
        "reclaim within a tier",
        (
            _on("b1", 0, "batch"),
            _on("b2", 1, "batch", borrowed=True),
            _on("c1", 2, "critical"),
            _on("c2", 3, "critical"),
        ),
        job("new", gpus=1, tier="batch"),
        ["b2"],
    ),
    (
        "never critical",
        tuple(_on(f"c{i}", i, "critical") for i in range(4)),
        job("new", gpus=1, tier="critical"),
        [],
    ),
    (
        "never an equal tier within its quota",
        tuple(_on(f"s{i}", i, "standard") for i in range(4)),
        job("new", gpus=1, tier="standard"),
        [],
    ),
    (
        "as few as needed",
        tuple(_on(f"b{i}", i, "batch", started=float(i)) for i in range(4)),
        job("new", gpus=2, tier="standard"),
        ["b2", "b3"],
    ),
]


@pytest.mark.parametrize(
    ("items", "preemptor", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_victim_choice(
    items: tuple[Running, ...], preemptor: Workload, expected: list[str]
) -> None:
    assert sorted(_victims(items, preemptor)) == expected


def test_floors_are_never_crossed() -> None:
    items = tuple(_on(f"b{i}", i, "batch") for i in range(4))
    policy = PolicyBuilder().floor(3000, tier="batch").build()
    assert _victims(items, job("new", gpus=1, tier="critical"), policy) == ["b0"]
    assert _victims(items, job("new", gpus=2, tier="critical"), policy) == []


def test_no_cycles() -> None:
    items = (_on("x", 0, "batch", borrowed=True), *(_on(f"c{i}", i, "critical") for i in (1, 2, 3)))
    state = PreemptionState(frozenset({("x", "y"), ("y", "new")}))
    # x evicted y, which evicted new: new evicting x would close the loop.
    assert _victims(items, job("new", gpus=1, tier="batch"), state=state) == []
    assert state.forget(["y"]).edges == frozenset()


def test_work_lost_weighs_time_by_size() -> None:
    item = _on("b", 0, "batch", started=40.0, checkpointed=70.0)
    assert work_lost(item, 100.0) == pytest.approx(30.0 * (1 + 1000 / 100_000))


tiers = st.sampled_from(["batch", "standard", "critical"])
arrivals = st.lists(
    st.tuples(st.sampled_from([1, 1, 2, 4]), tiers, st.booleans(), st.integers(0, 99)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(arrivals=arrivals)
def test_preemption_invariants(arrivals: list[tuple[int, str, bool, int]]) -> None:
    """Critical never evicted, floors never crossed, no cycles, never over capacity."""
    policy = PolicyBuilder().team("b").floor(2000, tier="standard").floor(1000, team="b").build()
    cluster = ClusterBuilder().node(gpus=4).node(gpus=4).build()
    live: dict[str, Running] = {}
    state = PreemptionState()
    edges: set[tuple[str, str]] = set()
    for i, (gpus, tier, borrowing, t) in enumerate(arrivals):
        workload = job(f"w{i}", gpus=gpus, tier=tier, team="ab"[i % 2])
        fits = cluster.fits(workload.demand)
        if fits.any():
            node = int(fits.argmax())
            slots = choose_slots(cluster.gpu_free[node], workload.demand)
            item = running(workload, node, slots, started=float(t), borrowed=borrowing)
            cluster = cluster.bind(workload.demand, item.binding)
            live[workload.name] = item
            continue
        before = floor_holdings(policy.floors, live.values())
        request = PreemptionRequest(cluster, tuple(live.values()), workload, borrowing)
        decision, state = preempt(request, policy, 100.0, state)
        if decision.binding is None:
            continue
        for victim in decision.victims:
            gone = live.pop(victim.name)
            assert gone.workload.tier != "critical"
            cluster = cluster.release(gone.workload.demand, gone.binding)
            edges.add((workload.name, victim.name))
        after = floor_holdings(policy.floors, live.values())
        for floor, was, now in zip(policy.floors, before, after, strict=True):
            assert now >= floor.amount or now == was
        cluster = cluster.bind(workload.demand, decision.binding)
        live[workload.name] = running(workload, decision.binding.node, decision.binding.gpus)
        assert _acyclic(edges)


def _acyclic(edges: set[tuple[str, str]]) -> bool:
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    done: set[str] = set()

    def visit(node: str, path: set[str]) -> bool:
        if node in path:
            return False
        if node in done:
            return True
        ok = all(visit(n, path | {node}) for n in graph.get(node, []))
        done.add(node)
        return ok

    return all(visit(n, set()) for n in list(graph))

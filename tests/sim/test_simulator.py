from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelplane.core.cluster import Demand, Node, Workload
from modelplane.sim.accounting import allocation_by_percent, beside_published, unallocated_at
from modelplane.sim.cli import sim_run
from modelplane.sim.engine import Arrival, simulate
from modelplane.sim.inflation import inflate, replay_inflation
from modelplane.sim.runner import load_trace, run_simulation
from modelplane.sim.trace import NODES_FILE, PODS_FILE, default_trace_dir, read_pods
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy

REPO = Path(__file__).resolve().parents[2]
TRACES = default_trace_dir(REPO)


def _traces() -> Path:
    if (TRACES / PODS_FILE).is_file():
        return TRACES
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{TRACES / PODS_FILE} is missing (CI=true: the trace must be present)")
    pytest.skip(f"openb trace not found at {TRACES}")


def _tiny() -> list[Node]:
    return [Node("a", 8000, 32_768, "T4", 2), Node("b", 8000, 32_768, "T4", 2)]


def _w(name: str, milli: int, tier: str = "batch") -> Workload:
    return Workload(name, Demand(1000, 1024, 1, milli), tier=tier)


def test_critical_preempts_batch_on_a_tiny_cluster() -> None:
    arrivals = [Arrival(float(i), _w(f"b{i}", 1000), 100.0) for i in range(4)]
    arrivals.append(Arrival(5.0, _w("crit", 1000, "critical"), 50.0))
    metrics = simulate(_tiny(), arrivals, Policy(), cycle_s=1.0)
    assert metrics.preemptions == 1
    assert metrics.gpu_hours_lost > 0
    assert metrics.floor_violations == 0
    # The evicted batch job runs again once capacity frees up.
    assert metrics.placed == 6
    assert metrics.samples[-1].pending_by_tier == ()


def test_inflation_reaches_the_target_and_resamples() -> None:
    pods = [_w(f"p{i}", 500) for i in range(3)]
    stream = list(inflate(pods, gpu_capacity=4000, seed=1, target=1.3))
    assert sum(w.demand.gpu_total for w in stream) == 5500
    assert len({w.name for w in stream}) == len(stream)
    assert stream == list(inflate(pods, gpu_capacity=4000, seed=1, target=1.3))


@pytest.mark.parametrize("strategy", list(PlacementStrategy))
def test_replay_accounts_for_every_pod(strategy: PlacementStrategy) -> None:
    pods = [_w("half", 500), _w("whole", 1000), _w("third", 300)]
    nodes = [Node(f"n{i}", 64_000, 262_144, "T4", 4) for i in range(8)]
    curve = replay_inflation(nodes, pods, strategy, 3)
    arrived = len(list(inflate(pods, 32_000, 3)))
    assert curve.placed + curve.failed == arrived
    assert list(curve.arrived_pct) == sorted(curve.arrived_pct)
    assert all(0.0 <= u <= 100.0 for u in curve.unallocated_pct)
    assert curve.unallocated_at(100) < 100.0


def test_synthetic_two_policies_and_outputs(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: spread\nplacement: {strategy: least-allocated}\n")
    (tmp_path / "b.yaml").write_text("name: fgd\nplacement: {strategy: fgd}\n")
    result = sim_run(
        "synthetic", tmp_path / "a.yaml", tmp_path / "b.yaml", seeds=1, out_dir=tmp_path / "out"
    )
    assert [r.label for r in result.results] == ["a", "b"]
    assert {p.name for p in result.outputs} == {
        "summary.json",
        "unallocated.png",
        "fragmentation.png",
        "pending.png",
    }
    assert all(r.summary["floor_violations"] == 0 for r in result.results)


def test_openb_sample_of_100_pods() -> None:
    traces = _traces()
    pods = read_pods(traces / PODS_FILE)
    assert len(pods) == 8152
    assert {p.workload.tier for p in pods} == {"critical", "standard", "batch"}
    policy = Policy(placement=PlacementPolicy(strategy=PlacementStrategy.FGD))
    result = run_simulation(
        "openb", [("fgd", policy)], seeds=1, trace_dir=traces, sample=100, target=0.25
    )
    (item,) = result.results
    assert item.runs[0].arrived > 10  # inflated past what was sampled by resampling
    assert item.summary["unallocated_pct_at_100"] > 70.0  # a quarter of capacity arrived
    assert item.summary["floor_violations"] == 0
    assert item.summary["preemptions"] == 0  # nothing departs: preemption is off
    assert "preemption off" in result.experiment
    nodes, _ = load_trace("openb", traces).scenario(42)
    assert len(nodes) == 1213  # the paper's GPU-node list by default
    nodes, _ = load_trace("openb", traces, nodes="all").scenario(42)
    assert len(nodes) == 1523
    assert (traces / NODES_FILE).is_file()


def test_departures_retry_preempted_work() -> None:
    """Batch work evicted by critical work runs again once the critical work is done."""
    arrivals = [Arrival(float(i), _w(f"b{i}", 1000), 30.0) for i in range(4)]
    arrivals.append(Arrival(5.0, _w("crit", 1000, "critical"), 20.0))
    metrics = simulate(_tiny(), arrivals, Policy(), cycle_s=1.0)
    assert metrics.preemptions == 1
    assert metrics.retried == 1
    assert metrics.finished == 5  # every pod ran to its end, the evicted one included
    assert metrics.samples[-1].pending_by_tier == ()


def test_openb_departures_experiment_says_what_ran() -> None:
    traces = _traces()
    policy = Policy(placement=PlacementPolicy(strategy=PlacementStrategy.MOST_ALLOCATED))
    result = run_simulation(
        "openb",
        [("best-fit", policy)],
        seeds=1,
        trace_dir=traces,
        sample=200,
        experiment="departures",
        durations="exp:600",
    )
    assert result.experiment.startswith("departures:")
    assert "exponential durations, mean 600 s" in result.experiment
    (run,) = result.results[0].runs
    assert run.finished > 0
    assert run.placed >= run.finished


def test_the_artifacts_accounting() -> None:
    """Mean allocation over the steps whose arrived share rounds to k; gaps use k +- 1."""
    arrived = [99.4, 99.6, 100.2, 100.5, 101.7, 104.0]
    allocated = [90.0, 91.0, 92.0, 93.0, 94.0, 95.0]
    curve = allocation_by_percent(arrived, allocated)
    assert curve[99] == 90.0
    assert curve[100] == pytest.approx((91.0 + 92.0 + 93.0) / 3)  # 100.5 rounds to 100
    assert curve[102] == 94.0
    assert curve[103] == 95.0  # none rounds to 103: those within 102..104
    assert unallocated_at(curve, 100) == pytest.approx(8.0)
    assert unallocated_at(curve, 120) == 5.0  # past the end: the last point


def test_ours_beside_the_published_table() -> None:
    line = beside_published({"fgd": 5.22, "least-allocated": 7.2, "random": 13.6})
    assert "fgd 5.22 vs FGD 4.77" in line
    assert "random 13.60 vs Random 13.70" in line
    assert "least-allocated" not in line  # no published counterpart
    assert "DotProd 9.38" in line

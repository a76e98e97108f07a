"""Jobs and serving on one simulated cluster, through the live queue's decisions."""

from __future__ import annotations

import math

from modelplane.core.cluster import Demand, Node, Workload, WorkloadKind
from modelplane.sim.engine import Arrival
from modelplane.sim.mixed import MixedConfig, MixedJob, run_mixed, simulate_mixed
from modelplane.sim.trace import find_pods_file, read_pods
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy

from .test_simulator import _traces

ONE_GPU = Demand(4000, 16_384, 1, 1000)


def _replica(name: str, at: float, duration: float, tier: str = "critical") -> Arrival:
    workload = Workload(name, ONE_GPU, team="web", tier=tier, kind=WorkloadKind.REPLICA)
    return Arrival(at, workload, duration)


def test_a_serving_scale_up_preempts_a_shard_and_the_job_still_finishes() -> None:
    nodes = [Node("t4", 16_000, 65_536, "T4", 2, cost_per_hour=2.0)]
    job = MixedJob("train", "ml", 0.0, ONE_GPU, (900.0, 900.0), min_shards=1, max_shards=2)
    serving = [_replica("web-r0", 0.0, 7200.0), _replica("web-r1", 300.0, 600.0)]
    config = MixedConfig(horizon_s=7200.0, cycle_s=60.0)
    metrics = simulate_mixed(nodes, serving, [job], Policy(), config=config)
    assert metrics.preemptions == 1  # the scale-up took one shard's GPU
    assert metrics.gpu_hours_lost > 0
    assert metrics.serving_floor_violations == 0
    assert metrics.jobs_finished == 1  # the preempted shard ran again to its end
    assert metrics.shards_finished == 2
    # The job carries the nodes' cost that serving did not reserve.
    assert math.isclose(metrics.cost_per_finished_job, metrics.cluster_cost - metrics.serving_spend)
    assert 0.0 < metrics.gpu_idle_share < 1.0


def test_a_job_with_no_room_waits_and_counts_as_unfinished() -> None:
    nodes = [Node("t4", 16_000, 65_536, "T4", 1, cost_per_hour=2.0)]
    serving = [_replica("web-r0", 0.0, 7200.0)]
    job = MixedJob("late", "ml", 60.0, ONE_GPU, (600.0,))
    metrics = simulate_mixed(nodes, serving, [job], Policy(), config=MixedConfig(7200.0, 60.0))
    assert metrics.jobs_finished == 0
    assert metrics.cost_per_finished_job == math.inf
    assert metrics.serving_floor_violations == 0


def test_policies_compared_on_jobs_serving_and_trace_pods() -> None:
    pods = read_pods(find_pods_file(_traces()))
    policies = [
        ("binpack", Policy(placement=PlacementPolicy(strategy=PlacementStrategy.MOST_ALLOCATED))),
        ("fgd", Policy(placement=PlacementPolicy(strategy=PlacementStrategy.FGD))),
    ]
    config = MixedConfig(horizon_s=4 * 3600, cycle_s=120.0, trace_pods=30)
    result = run_mixed(policies, seeds=1, trace_pods=pods, config=config)
    assert "30 best-effort openb pods" in result.experiment
    assert "core.jobqueue.decide" in result.experiment
    for label in ("binpack", "fgd"):
        summary = result.summary(label)
        assert summary["serving_floor_violations"] == 0
        assert summary["jobs_finished"] > 0
        assert math.isfinite(summary["cost_per_finished_job"])
        assert 0.0 <= summary["gpu_idle_share"] < 1.0
        (run,) = result.runs[label]
        assert run.jobs > 30  # the trace pods and the Poisson jobs

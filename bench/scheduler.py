"""Scheduler decision throughput.

1. Placement: the 8,152 openb pods placed one by one on its 1,523 nodes, every strategy.
2. One control cycle: KPA autoscaling for 1,000 endpoints, and admission of 10,000 pending
   jobs under 20 team quotas in 4 cohorts.

    .venv/bin/python bench/scheduler.py [--traces DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelplane.core.admission import AdmissionSnapshot, AdmissionState, Admitted, admit
from modelplane.core.autoscale import ScaleConfig, ScaleSnapshot, ScaleState, autoscale
from modelplane.core.cluster import ClusterSnapshot, Demand, Workload
from modelplane.core.fragmentation import TaskDistribution
from modelplane.core.placement import PlacementRequest, PlacementState, place
from modelplane.sim.trace import NODES_FILE, PODS_FILE, default_trace_dir, read_nodes, read_pods
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy, Quota, Team

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent


def bench_placement(traces: Path) -> list[dict[str, float | str]]:
    nodes = read_nodes(traces / NODES_FILE)
    pods = [p.workload for p in read_pods(traces / PODS_FILE)]
    shapes = TaskDistribution.from_demands(w.demand for w in pods)
    rows: list[dict[str, float | str]] = []
    for strategy in PlacementStrategy:
        cluster = ClusterSnapshot.build(nodes)
        config, state, placed = PlacementPolicy(strategy=strategy, seed=42), PlacementState(), 0
        started = time.perf_counter()
        for workload in pods:
            request = PlacementRequest(cluster, workload, shapes)
            decision, state = place(request, config, 0.0, state)
            if decision.binding is not None:
                cluster = cluster.bind(workload.demand, decision.binding)
                placed += 1
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "strategy": strategy.value,
                "pods": len(pods),
                "placed": placed,
                "seconds": elapsed,
                "pods_per_s": len(pods) / elapsed,
            }
        )
    return rows


def bench_autoscale(endpoints: int = 1000) -> dict[str, float]:
    rng = random.Random(1)
    config = ScaleConfig(min_replicas=1, max_replicas=50)
    # A minute of one-per-second samples already in each window, as in steady state.
    states = []
    for e in range(endpoints):
        state = ScaleState()
        for t in range(60):
            _, state = autoscale(ScaleSnapshot(f"ep{e}", 3, rng.uniform(0, 60)), config, t, state)
        states.append(state)
    started = time.perf_counter()
    for e, state in enumerate(states):
        autoscale(ScaleSnapshot(f"ep{e}", 3, rng.uniform(0, 60)), config, 60.0, state)
    elapsed = time.perf_counter() - started
    return {
        "endpoints": endpoints,
        "seconds": elapsed,
        "per_endpoint_us": 1e6 * elapsed / endpoints,
    }


def bench_admission(pending: int = 10_000, teams: int = 20) -> dict[str, float]:
    rng = random.Random(2)
    quota = {"gpu": Quota(nominal=40_000, borrowing_limit=20_000), "cpu": Quota(nominal=400_000)}
    policy = Policy(
        teams=tuple(Team(name=f"t{i}", cohort=f"c{i % 4}", quotas=quota) for i in range(teams))
    )
    shapes = (Demand(4000, 16_384, 1, 1000), Demand(2000, 8192, 1, 500), Demand(8000, 0, 0, 0))
    tiers = ("batch", "standard", "critical")

    def job(i: int) -> Workload:
        return Workload(
            f"j{i}", rng.choice(shapes), f"t{i % teams}", rng.choice(tiers), submitted_at=i
        )

    admitted = tuple(Admitted(job(i)) for i in range(1000))
    snapshot = AdmissionSnapshot(tuple(job(i) for i in range(1000, 1000 + pending)), admitted)
    started = time.perf_counter()
    decision, _ = admit(snapshot, policy, 0.0, AdmissionState())
    elapsed = time.perf_counter() - started
    return {
        "pending": pending,
        "admitted": len(decision.admitted),
        "seconds": elapsed,
        "jobs_per_s": pending / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default_trace_dir(REPO))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scheduler.json")
    args = parser.parse_args(argv)
    placement = bench_placement(args.traces)
    scale = bench_autoscale()
    admission = bench_admission()
    console = Console(width=110)
    table = Table(title="scheduler decisions (one process, one core)")
    for column in ("decision", "work", "seconds", "throughput"):
        table.add_column(column, justify="right")
    for row in placement:
        table.add_row(
            f"place ({row['strategy']})",
            f"{row['pods']} pods, {row['placed']} placed, 1523 nodes",
            f"{row['seconds']:.2f}",
            f"{row['pods_per_s']:,.0f} pods/s",
        )
    table.add_row(
        "autoscale (KPA)",
        f"{scale['endpoints']:.0f} endpoints",
        f"{scale['seconds']:.3f}",
        f"{scale['per_endpoint_us']:.1f} us/endpoint",
    )
    table.add_row(
        "admission cycle",
        f"{admission['pending']:.0f} pending, {admission['admitted']:.0f} admitted",
        f"{admission['seconds']:.3f}",
        f"{admission['jobs_per_s']:,.0f} jobs/s",
    )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "placement": placement,
        "autoscale": scale,
        "admission": admission,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

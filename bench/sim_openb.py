"""Reproduce the ATC '23 comparison on the openb trace: unallocated GPUs at 100% arrived workload.

Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
Gradient Descent", USENIX ATC '23, replay the Alibaba openb trace by workload inflation
(shuffled pods, resampled up to 130% of GPU capacity, seeds 42-51) and report that FGD
leaves up to 49% fewer GPUs unallocated than the baselines. This runs the same replay
through ``modelplane.core.placement.place`` and prints our figures beside that claim.

    .venv/bin/python bench/sim_openb.py [--traces DIR] [--seeds 10] [--pods default|gpuspec33]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelplane.sim.inflation import InflationCurve, replay_inflation
from modelplane.sim.trace import (
    NODES_FILE,
    PODS_FILE,
    PODS_GPUSPEC33_FILE,
    default_trace_dir,
    read_nodes,
    read_pods,
)
from modelplane.spec.policy import PlacementStrategy

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = (
    PlacementStrategy.RANDOM,
    PlacementStrategy.LEAST_ALLOCATED,
    PlacementStrategy.MOST_ALLOCATED,
    PlacementStrategy.FGD,
)
PAPER_CLAIM = "FGD: up to 49% fewer unallocated GPUs than the baselines (ATC '23, abstract)"


def _one(args: tuple[Path, Path, str, int]) -> InflationCurve:
    nodes_path, pods_path, strategy, seed = args
    nodes = read_nodes(nodes_path)
    pods = [p.workload for p in read_pods(pods_path)]
    return replay_inflation(nodes, pods, PlacementStrategy(strategy), seed)


def _summary(curves: list[InflationCurve]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for strategy in STRATEGIES:
        mine = [c for c in curves if c.strategy == strategy.value]
        at100 = [c.unallocated_at(100.0) for c in mine]
        lat = [x for c in mine for x in c.decision_s]
        out[strategy.value] = {
            "unallocated_pct_at_100_mean": statistics.fmean(at100),
            "unallocated_pct_at_100_stdev": statistics.stdev(at100) if len(at100) > 1 else 0.0,
            "unallocated_pct_at_130_mean": statistics.fmean(c.unallocated_pct[-1] for c in mine),
            "failed_pods_mean": statistics.fmean(c.failed for c in mine),
            "decision_ms_mean": 1000 * statistics.fmean(lat),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default_trace_dir(REPO))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pods", choices=("default", "gpuspec33"), default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sim_openb.json")
    args = parser.parse_args(argv)
    pods_file = PODS_FILE if args.pods == "default" else PODS_GPUSPEC33_FILE
    jobs = [
        (args.traces / NODES_FILE, args.traces / pods_file, s.value, seed)
        for seed in range(42, 42 + args.seeds)
        for s in STRATEGIES
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        curves = list(pool.map(_one, jobs))
    elapsed = time.perf_counter() - started
    summary = _summary(curves)
    _print(summary, args.seeds, args.pods, elapsed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "trace": f"openb {args.pods}",
        "seeds": list(range(42, 42 + args.seeds)),
        "paper": PAPER_CLAIM,
        "strategies": summary,
        "curves": {
            f"{c.strategy}/{c.seed}": {
                "arrived_pct": c.arrived_pct,
                "unallocated_pct": c.unallocated_pct,
            }
            for c in curves
        },
        "elapsed_s": elapsed,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


def _print(summary: dict[str, dict[str, float]], seeds: int, pods: str, elapsed: float) -> None:
    fgd = summary[PlacementStrategy.FGD.value]["unallocated_pct_at_100_mean"]
    table = Table(title=f"openb ({pods}) workload inflation, {seeds} seeds, {elapsed:.0f}s")
    for column in (
        "strategy",
        "unallocated @100%",
        "unallocated @130%",
        "failed pods",
        "FGD has fewer unallocated",
        "ms/decision",
    ):
        table.add_column(column, justify="right")
    for name, row in summary.items():
        mean, stdev = row["unallocated_pct_at_100_mean"], row["unallocated_pct_at_100_stdev"]
        gap = "-" if name == "fgd" else f"{100 * (mean - fgd) / mean:.0f}%"
        table.add_row(
            name,
            f"{mean:.2f}% ± {stdev:.2f}",
            f"{row['unallocated_pct_at_130_mean']:.2f}%",
            f"{row['failed_pods_mean']:.0f}",
            gap,
            f"{row['decision_ms_mean']:.2f}",
        )
    console = Console(width=120)
    console.print(table)
    console.print(f"paper: {PAPER_CLAIM}")


if __name__ == "__main__":
    sys.exit(main())

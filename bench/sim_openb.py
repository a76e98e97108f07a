"""The ATC '23 comparison on the openb trace, beside the artifact's published table.

Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
Gradient Descent", USENIX ATC '23, replay the Alibaba openb trace by workload inflation
(shuffled pods, resampled up to 130% of GPU capacity, seeds 42-51) on the GPU-node list.
This runs the same replay through ``modelplane.core.placement.place`` with the artifact's
accounting (arrived share counts failed pods; the figure at k% is the mean allocation over
the arrivals whose share rounds to k) and prints, per strategy: unallocated GPUs at 100%
arrived beside the published figure, at 130%, failed pods, pods decided per second (wall
and per CPU-second, the steadier on a shared machine) and seconds per run.

    .venv/bin/python bench/sim_openb.py [--traces DIR] [--seeds 10] [--pods default|gpuspec33]
        [--mix trace|artifact] [--strategies fgd,best-fit,...]
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

from modelplane.sim.accounting import ARTIFACT_NAME, PUBLISHED, PUBLISHED_SOURCE
from modelplane.sim.inflation import InflationCurve, artifact_task_mix, replay_inflation
from modelplane.sim.trace import (
    default_trace_dir,
    find_nodes_file,
    find_pods_file,
    read_nodes,
    read_pods,
)
from modelplane.spec.policy import PlacementStrategy

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = (
    PlacementStrategy.FGD,
    PlacementStrategy.BEST_FIT,
    PlacementStrategy.PACKING,
    PlacementStrategy.CLUSTERING,
    PlacementStrategy.DOT_PRODUCT,
    PlacementStrategy.RANDOM,
    PlacementStrategy.MOST_ALLOCATED,
    PlacementStrategy.LEAST_ALLOCATED,
)


def _one(args: tuple[Path, Path, str, int, str]) -> InflationCurve:
    nodes_path, pods_path, strategy, seed, mix = args
    nodes = read_nodes(nodes_path)
    pods = [p.workload for p in read_pods(pods_path)]
    shapes = artifact_task_mix(w.demand for w in pods) if mix == "artifact" else None
    return replay_inflation(nodes, pods, PlacementStrategy(strategy), seed, shapes=shapes)


def _summary(
    curves: list[InflationCurve], strategies: list[PlacementStrategy]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for strategy in strategies:
        mine = [c for c in curves if c.strategy == strategy.value]
        at100 = [c.unallocated_at(100.0) for c in mine]
        pods = sum(c.placed + c.failed for c in mine)
        out[strategy.value] = {
            "unallocated_pct_at_100_mean": statistics.fmean(at100),
            "unallocated_pct_at_100_stdev": statistics.stdev(at100) if len(at100) > 1 else 0.0,
            "unallocated_pct_at_130_mean": statistics.fmean(c.unallocated_at(130) for c in mine),
            "failed_pods_mean": statistics.fmean(c.failed for c in mine),
            "pods_per_s": pods / sum(c.elapsed_s for c in mine),
            "pods_per_cpu_s": pods / sum(c.cpu_s for c in mine),
            "cpu_seconds_per_run": statistics.fmean(c.cpu_s for c in mine),
            "seconds_per_run": statistics.fmean(c.elapsed_s for c in mine),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default_trace_dir(REPO))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pods", default="default")
    parser.add_argument("--nodes", default="gpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--mix",
        choices=("trace", "artifact"),
        default="trace",
        help="FGD's task mix: every shape of the pod list (trace), or the artifact's "
        "typical pods (the commonest shapes covering 95%%, memory left out)",
    )
    parser.add_argument(
        "--strategies", default=",".join(s.value for s in STRATEGIES), help="comma-separated"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sim_openb.json")
    args = parser.parse_args(argv)
    nodes_path = find_nodes_file(args.traces, args.nodes)
    pods_path = find_pods_file(args.traces, args.pods)
    strategies = [PlacementStrategy(s) for s in args.strategies.split(",")]
    jobs = [
        (nodes_path, pods_path, s.value, seed, args.mix)
        for seed in range(42, 42 + args.seeds)
        for s in strategies
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        curves = list(pool.map(_one, jobs))
    elapsed = time.perf_counter() - started
    summary = _summary(curves, strategies)
    compare = args.pods == "default" and args.nodes == "gpu"
    _print(summary, args.seeds, f"{pods_path.name} on {nodes_path.name}", elapsed, compare)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "trace": f"{pods_path.name} on {nodes_path.name}",
        "fgd_task_mix": args.mix,
        "seeds": list(range(42, 42 + args.seeds)),
        "published": PUBLISHED if compare else {},
        "published_source": PUBLISHED_SOURCE,
        "ours_vs_published": {
            ours: {
                "artifact": theirs,
                "ours": summary[ours]["unallocated_pct_at_100_mean"],
                "published": PUBLISHED[theirs],
            }
            for ours, theirs in ARTIFACT_NAME.items()
            if ours in summary
        }
        if compare
        else {},
        "strategies": summary,
        "curves": {
            f"{c.strategy}/{c.seed}": {
                "arrived_pct": c.arrived_pct,
                "unallocated_pct": c.unallocated_pct,
            }
            for c in curves
        },
        "elapsed_s": elapsed,
        "workers": args.workers,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


def _print(
    summary: dict[str, dict[str, float]], seeds: int, trace: str, elapsed: float, compare: bool
) -> None:
    fgd = summary.get("fgd", {}).get("unallocated_pct_at_100_mean", float("nan"))
    table = Table(title=f"{trace}: workload inflation, {seeds} seeds, {elapsed:.0f}s")
    for column in (
        "ours",
        "unallocated @100%",
        "artifact",
        "published @100%",
        "ours - published",
        "unallocated @130%",
        "failed pods",
        "FGD leaves fewer",
        "pods/s",
        "pods/CPU-s",
        "s/run",
    ):
        table.add_column(column, justify="right")
    for name, row in summary.items():
        mean, stdev = row["unallocated_pct_at_100_mean"], row["unallocated_pct_at_100_stdev"]
        theirs = ARTIFACT_NAME.get(name)
        published = PUBLISHED.get(theirs, 0.0) if theirs and compare else None
        table.add_row(
            name,
            f"{mean:.2f} ± {stdev:.2f}",
            theirs or "-",
            f"{published:.2f}" if published is not None else "-",
            f"{mean - published:+.2f}" if published is not None else "-",
            f"{row['unallocated_pct_at_130_mean']:.2f}",
            f"{row['failed_pods_mean']:.0f}",
            "-" if name == "fgd" else f"{100 * (mean - fgd) / mean:.0f}%",
            f"{row['pods_per_s']:.0f}",
            f"{row['pods_per_cpu_s']:.0f}",
            f"{row['seconds_per_run']:.1f}",
        )
    console = Console(width=160)
    console.print(table)
    console.print(f"published: {PUBLISHED_SOURCE}")


if __name__ == "__main__":
    sys.exit(main())

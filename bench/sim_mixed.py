"""Jobs and serving on one simulated cluster: placement policies side by side.

Runs :func:`modelplane.sim.mixed.run_mixed` (diurnal KPA serving, Poisson sharded jobs and
best-effort openb pods on 16 priced nodes, decided by core.jobqueue, core.placement and
core.preemption) under best-fit, FGD and spread, and prints each figure with its ratio to
best-fit's.

    .venv/bin/python bench/sim_mixed.py [--seeds 3] [--hours 24] [--traces DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelplane.sim.mixed import MixedConfig, run_mixed
from modelplane.sim.trace import default_trace_dir, find_pods_file, read_pods
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent
POLICIES = (
    ("best-fit", PlacementStrategy.MOST_ALLOCATED),
    ("fgd", PlacementStrategy.FGD),
    ("spread", PlacementStrategy.LEAST_ALLOCATED),
)
ROWS = (
    ("cost_per_finished_job", "cost per finished job ($)", "{:.2f}"),
    ("serving_floor_violations", "serving floor violations", "{:.0f}"),
    ("gpu_idle_share", "GPU idle share", "{:.1%}"),
    ("jobs_finished", "jobs finished", "{:.0f}"),
    ("job_hours_mean", "hours submit to done", "{:.2f}"),
    ("preemptions", "preemptions", "{:.0f}"),
    ("gpu_hours_lost", "GPU-hours lost", "{:.2f}"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--trace-pods", type=int, default=150)
    parser.add_argument("--traces", type=Path, default=default_trace_dir(REPO))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sim_mixed.json")
    args = parser.parse_args(argv)
    pods = read_pods(find_pods_file(args.traces)) if args.trace_pods else []
    policies = [
        (label, Policy(name=label, placement=PlacementPolicy(strategy=strategy)))
        for label, strategy in POLICIES
    ]
    config = MixedConfig(horizon_s=args.hours * 3600, trace_pods=args.trace_pods)
    started, cpu = time.perf_counter(), time.process_time()
    result = run_mixed(policies, seeds=args.seeds, trace_pods=pods, config=config)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    summaries = {label: result.summary(label) for label, _ in policies}
    base = summaries["best-fit"]
    table = Table(
        title=f"jobs and serving, {args.seeds} seeds, {elapsed:.0f}s ({cpu:.0f} CPU-s)",
        caption=result.experiment,
    )
    table.add_column("metric")
    for label, _ in policies:
        table.add_column(label, justify="right")
        if label != "best-fit":
            table.add_column(f"{label}/best-fit", justify="right")
    for key, name, fmt in ROWS:
        cells = []
        for label, _ in policies:
            value = summaries[label][key]
            cells.append(fmt.format(value))
            if label != "best-fit":
                cells.append(f"{value / base[key]:.2f}x" if base[key] else "-")
        table.add_row(name, *cells)
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "experiment": result.experiment,
        "seeds": list(result.seeds),
        "policies": summaries,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The simulator's outputs: a rich table, PNG plots (matplotlib, Agg) and a JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from modelplane.errors import MissingExtra
from modelplane.sim.runner import SimulationResult

__all__ = ["summary_table", "write_json", "write_plots"]

_ROWS = (
    ("unallocated_pct_at_100", "unallocated GPU % at 100% arrived", "{:.2f}"),
    ("arrived", "arrived pods", "{:.0f}"),
    ("placed", "placements (retries included)", "{:.0f}"),
    ("finished", "finished", "{:.0f}"),
    ("retried", "evicted work placed again", "{:.0f}"),
    ("allocation_pct_mean", "GPU allocation rate % (mean)", "{:.1f}"),
    ("fragmentation_pct_end", "fragmentation % of capacity (end)", "{:.2f}"),
    ("preemptions", "preemptions", "{:.1f}"),
    ("gpu_hours_lost", "GPU-hours lost to preemption", "{:.2f}"),
    ("floor_violations", "floor violations", "{:.0f}"),
    ("decision_ms_p50", "decision latency p50 ms", "{:.3f}"),
    ("decision_ms_p99", "decision latency p99 ms", "{:.3f}"),
    ("run_s", "seconds per run", "{:.1f}"),
)


def summary_table(result: SimulationResult) -> Table:
    """Policies side by side, one row per figure, means over seeds."""
    table = Table(
        title=f"{result.trace}: {len(result.seeds)} seeds", caption=result.experiment or None
    )
    table.add_column("metric")
    for item in result.results:
        table.add_column(item.label, justify="right")
    keys = [k for k, _, _ in _ROWS]
    pending = sorted({k for r in result.results for k in r.summary if k.startswith("pending_")})
    rows = [
        *_ROWS,
        *((k, f"pending {k.removeprefix('pending_')} (end)", "{:.1f}") for k in pending),
    ]
    # Work departs in time-based runs: there the arrived share is no axis of the experiment.
    timed = result.trace == "synthetic" or result.experiment.startswith("departures")
    for key, label, fmt in rows:
        if timed and key == "unallocated_pct_at_100":
            continue
        if key in keys or key in pending:
            table.add_row(label, *(fmt.format(r.summary.get(key, 0.0)) for r in result.results))
    return table


def write_json(result: SimulationResult, path: Path) -> Path:
    payload = {
        "trace": result.trace,
        "seeds": list(result.seeds),
        "experiment": result.experiment,
        "policies": {r.label: {"name": r.policy.name, **r.summary} for r in result.results},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def write_plots(result: SimulationResult, out_dir: Path) -> list[Path]:
    """Unallocated GPUs, fragmentation and pending work against arrived workload."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtra("matplotlib", "dev") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = (
        ("unallocated", "unallocated GPU %", lambda s: 100.0 - s.allocated_pct),
        ("fragmentation", "fragmentation % of capacity", lambda s: s.fragmentation_pct),
        ("pending", "pending workloads", lambda s: float(sum(c for _, c in s.pending_by_tier))),
    )
    # Synthetic traces run in time; the inflation replay's axis is arrived workload.
    timed = result.trace == "synthetic" or result.experiment.startswith("departures")
    paths = []
    for name, ylabel, value in panels:
        fig, ax = plt.subplots(figsize=(6, 4))
        for item in result.results:
            for i, run in enumerate(item.runs):
                xs = [s.hours if timed else s.arrived_pct for s in run.samples]
                ys = [value(s) for s in run.samples]
                ax.plot(
                    xs,
                    ys,
                    color=f"C{result.results.index(item)}",
                    alpha=0.5,
                    label=item.label if i == 0 else None,
                )
        ax.set_xlabel("hours" if timed else "arrived workload (% of GPU capacity)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{result.trace}: {ylabel}")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths

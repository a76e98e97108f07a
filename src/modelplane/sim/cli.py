"""The whole of ``modelplane sim run``, as one typed function (and ``main(argv)`` for scripts).

The ``modelplane`` CLI wires :func:`sim_run` to
``modelplane sim run --trace T --policy a.yaml [--vs b.yaml] --seeds 10``; it prints the
table, writes PNG plots and ``summary.json`` under ``out_dir`` and returns the result.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Unpack

from rich.console import Console
from rich.table import Table

from modelplane.errors import InvalidSpec, ModelplaneError
from modelplane.sim.accounting import PUBLISHED_SOURCE, beside_published
from modelplane.sim.mixed import MixedConfig, MixedResult, run_mixed
from modelplane.sim.report import summary_table, write_json, write_plots
from modelplane.sim.runner import SimulationResult, TraceOptions, run_simulation
from modelplane.sim.trace import default_trace_dir, find_pods_file, read_pods
from modelplane.spec.io import load_yaml
from modelplane.spec.policy import Policy

__all__ = ["main", "mixed_table", "sim_mixed", "sim_run"]


def sim_run(
    trace: str,
    policy: Path,
    vs: Path | None = None,
    *,
    seeds: int = 10,
    trace_dir: Path | None = None,
    out_dir: Path = Path("sim-out"),
    plots: bool = True,
    console: Console | None = None,
    **options: Unpack[TraceOptions],
) -> SimulationResult:
    """Replay ``trace`` under ``policy`` (and ``vs``), print the table, write the outputs.

    ``trace`` is ``openb``, ``openb-gpuspec33``, ``synthetic`` or a folder of openb CSVs;
    ``trace_dir`` defaults to ``../shared/traces`` beside the working directory. ``nodes``
    is ``gpu`` (the paper's GPU-node list), ``all`` or a CSV; ``pods`` a pod-list variant
    (``default``, ``gpuspec33``, ``multigpu50``...) or a CSV. ``experiment`` is
    ``inflation`` (the paper's: nothing departs) or ``departures`` (pods run for
    ``durations``: ``trace`` or ``exp:SECONDS``, and preempted work is retried).
    """
    console = console or Console()
    policies = _policies(policy, vs)
    result = run_simulation(
        trace,
        policies,
        seeds=seeds,
        trace_dir=trace_dir or default_trace_dir(Path.cwd()),
        console=console,
        **options,
    )
    console.print(summary_table(result))
    if _comparable(result, options.get("sample")):
        ours = {
            r.policy.placement.strategy.value: r.summary["unallocated_pct_at_100"]
            for r in result.results
        }
        console.print(beside_published(ours))
        console.print(f"published: {PUBLISHED_SOURCE}")
    outputs = [write_json(result, out_dir / "summary.json")]
    if plots:
        outputs += write_plots(result, out_dir)
    console.print(f"wrote {', '.join(str(p) for p in outputs)}")
    return replace(result, outputs=tuple(outputs))


_MIXED_ROWS = (
    ("cost_per_finished_job", "cost per finished job ($)", "{:.2f}"),
    ("serving_floor_violations", "serving floor violations (all seeds)", "{:.0f}"),
    ("gpu_idle_share", "GPU idle share", "{:.1%}"),
    ("jobs_finished", "jobs finished", "{:.0f}"),
    ("jobs", "jobs arrived", "{:.0f}"),
    ("job_hours_mean", "hours from submit to done (mean)", "{:.2f}"),
    ("preemptions", "preemptions", "{:.1f}"),
    ("gpu_hours_lost", "GPU-hours lost to preemption", "{:.2f}"),
    ("unplaceable_starts", "admitted shards no node had room for", "{:.0f}"),
    ("batch_spend", "batch reserved ($)", "{:.0f}"),
    ("serving_spend", "serving reserved ($)", "{:.0f}"),
    ("cluster_cost", "nodes' cost ($)", "{:.0f}"),
)


def mixed_table(result: MixedResult) -> Table:
    """Policies side by side: means over seeds, violations summed."""
    table = Table(title=f"jobs and serving: {len(result.seeds)} seeds", caption=result.experiment)
    table.add_column("metric")
    labels = list(result.runs)
    for label in labels:
        table.add_column(label, justify="right")
    summaries = [result.summary(label) for label in labels]
    for key, name, fmt in _MIXED_ROWS:
        table.add_row(name, *(fmt.format(s[key]) for s in summaries))
    return table


def sim_mixed(
    policy: Path,
    vs: Path | None = None,
    *,
    seeds: int = 3,
    trace_dir: Path | None = None,
    trace_pods: int = 150,
    hours: float = 24.0,
    job_rate_per_h: float = 30.0,
    out_dir: Path = Path("sim-out"),
    console: Console | None = None,
) -> MixedResult:
    """Jobs and serving on one simulated cluster under ``policy`` (and ``vs``).

    Best-effort pods of the openb trace join as one-shard jobs when ``trace_dir`` holds the
    default pod list (``trace_pods=0`` leaves them out). Prints the table and writes
    ``mixed.json`` under ``out_dir``.
    """
    console = console or Console()
    if hours <= 0 or job_rate_per_h < 0 or trace_pods < 0 or seeds < 1:
        raise InvalidSpec(
            "sim mixed: --hours must be > 0, --job-rate and --trace-pods >= 0, --seeds >= 1"
        )
    policies = _policies(policy, vs)
    pods = []
    if trace_pods:
        folder = trace_dir or default_trace_dir(Path.cwd())
        pods = read_pods(find_pods_file(folder, "default"))
    config = MixedConfig(
        horizon_s=hours * 3600, job_rate_per_h=job_rate_per_h, trace_pods=trace_pods
    )
    result = run_mixed(policies, seeds=seeds, trace_pods=pods, config=config)
    console.print(mixed_table(result))
    path = out_dir / "mixed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "experiment": result.experiment,
        "seeds": list(result.seeds),
        "policies": {label: result.summary(label) for label in result.runs},
    }
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")
    return result


def _comparable(result: SimulationResult, sample: int | None) -> bool:
    """The artifact's setting: the default pod list on the GPU-node list, inflated, whole."""
    line = result.experiment
    return (
        sample is None
        and line.startswith("inflation")
        and "openb_pod_list_default.csv" in line
        and "openb_node_list_gpu_node.csv" in line
    )


def _policies(policy: Path, vs: Path | None) -> list[tuple[str, Policy]]:
    policies = [(_label(policy), load_yaml(Policy, policy))]
    if vs is not None:
        label = _label(vs)
        policies.append(
            (label if label != policies[0][0] else f"{label} (vs)", load_yaml(Policy, vs))
        )
    return policies


def _label(path: Path) -> str:
    return path.stem


def main(argv: list[str] | None = None) -> int:
    """``python -m modelplane.sim.cli --trace openb --policy a.yaml --vs b.yaml``."""
    parser = argparse.ArgumentParser(prog="modelplane sim run")
    parser.add_argument("--trace", required=True)
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--vs", type=Path)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trace-dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("sim-out"))
    parser.add_argument("--sample", type=int)
    parser.add_argument("--target", type=float, default=1.3)
    parser.add_argument("--nodes", default="gpu")
    parser.add_argument("--pods", default="default")
    parser.add_argument("--experiment", choices=("inflation", "departures"), default="inflation")
    parser.add_argument("--durations", default="trace")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    console = Console()
    try:
        sim_run(
            args.trace,
            args.policy,
            args.vs,
            seeds=args.seeds,
            trace_dir=args.trace_dir,
            out_dir=args.out,
            sample=args.sample,
            target=args.target,
            nodes=args.nodes,
            pods=args.pods,
            experiment=args.experiment,
            durations=args.durations,
            plots=not args.no_plots,
            console=console,
        )
    except ModelplaneError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

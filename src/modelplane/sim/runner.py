"""Run one or two policies over N seeds of a trace and collect what to compare."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from modelplane.core.cluster import ClusterSnapshot, Node
from modelplane.errors import InvalidSpec
from modelplane.sim.engine import Arrival, RunMetrics, simulate
from modelplane.sim.trace import NODES_FILE, PODS_FILE, PODS_GPUSPEC33_FILE, read_nodes, read_pods
from modelplane.sim.workloads import (
    diurnal_serving,
    openb_arrivals,
    poisson_jobs,
    synthetic_cluster,
)
from modelplane.spec.policy import Policy

__all__ = [
    "PolicyResult",
    "SimulationResult",
    "TRACES",
    "load_trace",
    "run_simulation",
    "summarise",
]

TRACES = ("openb", "openb-gpuspec33", "synthetic")
"""Names ``--trace`` accepts besides a folder holding openb-format CSVs."""

ArrivalsFor = Callable[[int], list[Arrival]]


@dataclass(frozen=True, slots=True)
class PolicyResult:
    label: str
    policy: Policy
    runs: tuple[RunMetrics, ...]
    summary: dict[str, float]


@dataclass(frozen=True, slots=True)
class SimulationResult:
    trace: str
    seeds: tuple[int, ...]
    results: tuple[PolicyResult, ...]
    outputs: tuple[Path, ...] = ()


def load_trace(
    trace: str, trace_dir: Path | None, *, target: float = 1.3, sample: int | None = None
) -> tuple[list[Node], ArrivalsFor]:
    """Nodes and a per-seed arrival stream for a named trace or a folder of openb CSVs."""
    if trace == "synthetic":
        return synthetic_cluster(), lambda seed: poisson_jobs(seed) + diurnal_serving(seed)
    if trace in ("openb", "openb-gpuspec33"):
        if trace_dir is None:
            raise InvalidSpec(f"trace {trace!r} needs the folder holding the openb CSVs")
        folder = trace_dir
    else:
        folder = Path(trace)
        if not folder.is_dir():
            raise InvalidSpec(f"--trace {trace!r}: expected one of {', '.join(TRACES)} or a folder")
    pods_file = PODS_GPUSPEC33_FILE if trace == "openb-gpuspec33" else PODS_FILE
    nodes = read_nodes(folder / NODES_FILE)
    pods = [p.workload for p in read_pods(folder / pods_file)]
    if sample is not None:
        pods = pods[:sample]
    capacity = ClusterSnapshot.build(nodes).gpu_capacity
    return nodes, lambda seed: openb_arrivals(pods, capacity, seed, target=target)


def summarise(runs: Sequence[RunMetrics]) -> dict[str, float]:
    """Means over seeds of the figures the table and the JSON report."""
    latencies = sorted(x for r in runs for x in r.decision_s) or [0.0]
    last = [r.samples[-1] for r in runs if r.samples]
    pending: dict[str, list[int]] = {}
    for sample in last:
        for tier, count in sample.pending_by_tier:
            pending.setdefault(tier, []).append(count)
    out = {
        "unallocated_pct_at_100": statistics.fmean(r.unallocated_at(100.0) for r in runs),
        "allocation_pct_mean": statistics.fmean(
            statistics.fmean(s.allocated_pct for s in r.samples) if r.samples else 0.0 for r in runs
        ),
        "fragmentation_pct_end": statistics.fmean(s.fragmentation_pct for s in last)
        if last
        else 0.0,
        "preemptions": statistics.fmean(r.preemptions for r in runs),
        "gpu_hours_lost": statistics.fmean(r.gpu_hours_lost for r in runs),
        "floor_violations": float(sum(r.floor_violations for r in runs)),
        "decision_ms_p50": 1000 * latencies[len(latencies) // 2],
        "decision_ms_p99": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }
    for tier, counts in sorted(pending.items()):
        out[f"pending_{tier}"] = sum(counts) / len(runs)
    return out


def run_simulation(
    trace: str,
    policies: Sequence[tuple[str, Policy]],
    *,
    seeds: int = 10,
    first_seed: int = 42,
    trace_dir: Path | None = None,
    target: float = 1.3,
    sample: int | None = None,
    console: Console | None = None,
) -> SimulationResult:
    """Every policy over the same seeds (so the same arrivals), with a progress bar."""
    nodes, arrivals_for = load_trace(trace, trace_dir, target=target, sample=sample)
    seed_list = tuple(range(first_seed, first_seed + seeds))
    runs: dict[str, list[RunMetrics]] = {label: [] for label, _ in policies}
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(
        *Progress.get_default_columns()[:1], *columns, console=console, transient=True
    ) as bar:
        task = bar.add_task(f"simulating {trace}", total=len(seed_list) * len(policies))
        for seed in seed_list:
            arrivals = arrivals_for(seed)
            for label, policy in policies:
                runs[label].append(simulate(nodes, arrivals, policy, seed=seed))
                bar.advance(task)
    results = tuple(
        PolicyResult(label, policy, tuple(runs[label]), summarise(runs[label]))
        for label, policy in policies
    )
    return SimulationResult(trace, seed_list, results)

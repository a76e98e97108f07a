"""Run one or two policies over N seeds of a trace and collect what to compare."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from modelplane.core.cluster import ClusterSnapshot, Node
from modelplane.errors import InvalidSpec
from modelplane.sim.engine import Arrival, RunMetrics, simulate
from modelplane.sim.inflation import artifact_node_names, inflate
from modelplane.sim.trace import (
    TracePod,
    check_replayable,
    find_nodes_file,
    find_pods_file,
    read_nodes,
    read_pods,
)
from modelplane.sim.workloads import (
    diurnal_serving,
    openb_arrivals,
    poisson_jobs,
    synthetic_cluster,
)
from modelplane.spec.policy import Policy

__all__ = [
    "TraceOptions",
    "EXPERIMENTS",
    "PolicyResult",
    "TraceSetup",
    "parse_durations",
    "SimulationResult",
    "TRACES",
    "load_trace",
    "run_simulation",
    "summarise",
]

TRACES = ("openb", "openb-gpuspec33", "synthetic")
"""Names ``--trace`` accepts besides a folder holding openb-format CSVs."""
EXPERIMENTS = ("inflation", "departures")

Scenario = Callable[[int], tuple[list[Node], list[Arrival]]]


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
    experiment: str = ""
    """Which experiment ran, in one line (printed under the table and stored in the JSON)."""


@dataclass(frozen=True, slots=True)
class TraceSetup:
    """What a run replays: per seed, the nodes and the arrivals; and, in words, how."""

    name: str
    experiment: str
    """One line for the report: which experiment ran, with what departures and preemption."""
    scenario: Scenario
    preemption: bool = True
    """False where nothing departs: an evicted pod could never run again."""


def parse_durations(spec: str) -> float | None:
    """``trace`` (the trace's own, else exponential with the trace's median) or ``exp:SECONDS``.

    Returns the declared mean, or None for ``trace``.
    """
    if spec == "trace":
        return None
    kind, _, mean = spec.partition(":")
    try:
        value = float(mean)
    except ValueError:
        value = -1.0
    if kind != "exp" or value <= 0:
        raise InvalidSpec(f"--durations {spec!r}: expected 'trace' or 'exp:SECONDS' (SECONDS > 0)")
    return value


def _sampled(
    nodes: Sequence[Node], pods: Sequence[TracePod], sample: int | None, seed: int
) -> tuple[list[Node], list[TracePod]]:
    """``sample`` pods at random, and the same share of nodes, so the run shrinks with it."""
    if sample is None or sample >= len(pods):
        return list(nodes), list(pods)
    rng = random.Random(f"sample:{seed}")
    picked = rng.sample(list(pods), sample)
    if not any(p.workload.demand.gpus for p in picked):
        # A sample of CPU-only pods could never fill GPUs; swap one GPU pod in.
        picked[0] = rng.choice([p for p in pods if p.workload.demand.gpus])
    gpu_nodes = [n for n in nodes if n.gpu_count]
    share = sample / len(pods)
    count = max(1, round(share * len(nodes)))
    kept = rng.sample(list(nodes), count)
    if not any(n.gpu_count for n in kept):
        kept[0] = rng.choice(gpu_nodes)
    return kept, picked


def _departures(
    pods: Sequence[TracePod], capacity: int, seed: int, target: float, mean_s: float | None
) -> list[Arrival]:
    """The inflated stream with durations, arriving as a Poisson process at the rate that
    offers ``target`` x the GPU capacity on average (Little's law: rate x E[gpu x time])."""
    by_name = {p.workload.name: p for p in pods}
    known = [d for p in pods if (d := p.duration_s) is not None]
    fallback = mean_s if mean_s is not None else (statistics.median(known) if known else 600.0)
    rng = random.Random(f"durations:{seed}")
    stream = list(inflate([p.workload for p in pods], capacity, seed, target))
    durations = []
    for workload in stream:
        pod = by_name[workload.name.split("#", 1)[0]]
        own = pod.duration_s if mean_s is None else None
        durations.append(own if own is not None else rng.expovariate(1.0 / fallback))
    work = statistics.fmean(w.demand.gpu_total * d for w, d in zip(stream, durations, strict=True))
    rate = target * capacity / work if work > 0 else 1.0
    out, now = [], 0.0
    for workload, duration in zip(stream, durations, strict=True):
        now += rng.expovariate(rate)
        out.append(Arrival(now, workload, duration))
    return out


class TraceOptions(TypedDict, total=False):
    """How a trace becomes arrivals: :func:`load_trace`'s keywords, which hold the defaults.

    :func:`run_simulation` and ``sim.cli.sim_run`` pass them through unchanged, so a new
    option is declared here and in ``load_trace`` only.
    """

    target: float
    sample: int | None
    nodes: str
    pods: str
    experiment: str
    durations: str


def load_trace(
    trace: str,
    trace_dir: Path | None,
    *,
    target: float = 1.3,
    sample: int | None = None,
    nodes: str = "gpu",
    pods: str = "default",
    experiment: str = "inflation",
    durations: str = "trace",
) -> TraceSetup:
    """Per-seed nodes and arrivals for a named trace or a folder of openb CSVs.

    Every check of the files runs here, before any simulation starts.
    """
    if experiment not in EXPERIMENTS:
        raise InvalidSpec(f"--experiment {experiment!r}: expected one of {', '.join(EXPERIMENTS)}")
    if not 0 < target <= 10:
        raise InvalidSpec(f"--target {target}: expected a share of GPU capacity in (0, 10]")
    if sample is not None and sample < 1:
        raise InvalidSpec(f"--sample {sample}: expected at least 1 pod")
    mean_s = parse_durations(durations)
    if trace == "synthetic":
        return TraceSetup(
            "synthetic",
            "synthetic: Poisson batch jobs and diurnal serving replicas, which depart",
            lambda seed: (synthetic_cluster(), poisson_jobs(seed) + diurnal_serving(seed)),
        )
    if trace in ("openb", "openb-gpuspec33"):
        if trace_dir is None:
            raise InvalidSpec(f"trace {trace!r} needs the folder holding the openb CSVs")
        folder = trace_dir
        if trace == "openb-gpuspec33":
            pods = "gpuspec33"
    else:
        folder = Path(trace)
        if not folder.is_dir():
            raise InvalidSpec(f"--trace {trace!r}: expected one of {', '.join(TRACES)} or a folder")
    pods_path = find_pods_file(folder, pods)
    nodes_path = find_nodes_file(folder, nodes)
    all_nodes = read_nodes(nodes_path)
    all_pods = read_pods(pods_path)
    check_replayable(all_nodes, all_pods, f"{pods_path.name} on {nodes_path.name}")
    files = f"{pods_path.name} on {nodes_path.name} ({len(all_nodes)} nodes)"
    shrink = ""
    if sample is not None and sample < len(all_pods):
        kept = max(1, round(sample / len(all_pods) * len(all_nodes)))
        shrink = f", {sample} pods and {kept} nodes sampled per seed"

    def scenario(seed: int) -> tuple[list[Node], list[Arrival]]:
        kept, picked = _sampled(all_nodes, all_pods, sample, seed)
        capacity = ClusterSnapshot.build(kept).gpu_capacity
        if experiment == "inflation":
            # Named as the artifact names them per seed: its ties go to a random node.
            arrivals = openb_arrivals([p.workload for p in picked], capacity, seed, target=target)
            return artifact_node_names(kept, seed), arrivals
        return kept, _departures(picked, capacity, seed, target, mean_s)

    if experiment == "inflation":
        line = (
            f"inflation (ATC '23): {files}{shrink}; arrivals to {100 * target:.0f}% of GPU "
            "capacity, nothing departs, preemption off"
        )
        return TraceSetup(trace, line, scenario, preemption=False)
    how = (
        "the trace's durations (else exponential, its median)"
        if mean_s is None
        else (f"exponential durations, mean {mean_s:.0f} s")
    )
    line = (
        f"departures: {files}{shrink}; Poisson arrivals offering {100 * target:.0f}% of GPU "
        f"capacity, {how}; preempted work is retried"
    )
    return TraceSetup(trace, line, scenario)


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
        "retried": statistics.fmean(r.retried for r in runs),
        "finished": statistics.fmean(r.finished for r in runs),
        "placed": statistics.fmean(r.placed for r in runs),
        "arrived": statistics.fmean(r.arrived for r in runs),
        "run_s": statistics.fmean(r.elapsed_s for r in runs),
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
    console: Console | None = None,
    **options: Unpack[TraceOptions],
) -> SimulationResult:
    """Every policy over the same seeds (so the same arrivals), with a progress bar."""
    setup = load_trace(trace, trace_dir, **options)
    if not setup.preemption:
        # Nothing departs in this experiment: an evicted pod would be lost for good.
        policies = [
            (
                label,
                p.model_copy(
                    update={"preemption": p.preemption.model_copy(update={"enabled": False})}
                ),
            )
            for label, p in policies
        ]
    seed_list = tuple(range(first_seed, first_seed + seeds))
    runs: dict[str, list[RunMetrics]] = {label: [] for label, _ in policies}
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(
        *Progress.get_default_columns()[:1], *columns, console=console, transient=True
    ) as bar:
        task = bar.add_task(f"simulating {trace}", total=len(seed_list) * len(policies))
        for seed in seed_list:
            cluster, arrivals = setup.scenario(seed)
            for label, policy in policies:
                runs[label].append(simulate(cluster, arrivals, policy, seed=seed))
                bar.advance(task)
    results = tuple(
        PolicyResult(label, policy, tuple(runs[label]), summarise(runs[label]))
        for label, policy in policies
    )
    return SimulationResult(trace, seed_list, results, experiment=setup.experiment)

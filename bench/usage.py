"""What usage accounting costs: the reports over a week, raw and compacted, and one sample.

Sections (each a key of ``bench/results/usage.json``):

1. ``reports``: ``--replicas`` replicas (20) on one priced node, one interval each per
   minute for ``--days`` (7), as ``up``'s sampler writes them, in a SQLite store. The cost
   and the usage reports over the whole period, best of three, on the raw rows, then again
   after compaction (hourly runs): rows and seconds side by side, and their ratios. The
   cost identity (teams + idle = nodes) is checked on both, and the figures must agree.
2. ``sample``: one sampler reading of ``--processes`` (8) real worker-like processes
   (psutil: CPU times and RSS), best of twenty, in milliseconds: what every ``sample_s``
   (5 s) costs ``up``.

Run from the repository root:

    .venv/bin/python bench/usage.py              # ~3 minutes on 2 busy cores
    .venv/bin/python bench/usage.py --quick      # 5 replicas, 2 days
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from modelplane.controlplane.usage import ReplicaSlot, UsageSampler
from modelplane.observe.usage import NodeInterval, UsageInterval, WorkloadKind, record_period
from modelplane.observe.usage_compact import FINE_S, compact
from modelplane.observe.usage_report import Period, cost_document, usage_document
from modelplane.spec.cluster import NodeSpec
from modelplane.store.db import open_engine

REPO = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0 - (1_800_000_000.0 % 3600)
MINUTE = 60.0


def _best(run: Callable[[], Any], times: int) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(times):
        began = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - began)
    return best, value


def _seed(engine: Any, replicas: int, days: int) -> int:
    minutes = days * 24 * 60
    for day in range(days):
        usage: list[UsageInterval] = []
        nodes: list[NodeInterval] = []
        for m in range(day * 1440, (day + 1) * 1440):
            start, end = T0 + m * MINUTE, T0 + (m + 1) * MINUTE
            nodes.append(
                NodeInterval(
                    node="n1",
                    start=start,
                    end=end,
                    cpu_milli=64000,
                    memory_mib=262144,
                    gpu_count=4,
                    gpu_model="A10",
                    cost_per_hour=8.0,
                )
            )
            usage += [
                UsageInterval(
                    kind=WorkloadKind.REPLICA,
                    team=f"team-{r % 4}",
                    node="n1",
                    start=start,
                    end=end,
                    endpoint=f"endpoint-{r % 10}",
                    version="m:1",
                    replica=r,
                    cpu_milli=2000,
                    memory_mib=4096,
                    gpu_fraction=0.25 if r % 5 == 0 else 0.0,
                    cpu_seconds=6.0 + r % 3,
                    cpu_peak_milli=300.0,
                    memory_peak_mib=400.0,
                    memory_mean_mib=350.0,
                    samples=12,
                )
                for r in range(replicas)
            ]
        record_period(engine, usage, nodes)
    return replicas * minutes


def _reports(engine: Any, period: Period) -> dict[str, Any]:
    cost_s, cost = _best(lambda: cost_document(engine, period), 3)
    usage_s, usage = _best(lambda: usage_document(engine, period), 3)
    assert abs(cost["unaccounted"]) < 1e-6, cost["unaccounted"]
    return {"cost_s": cost_s, "usage_s": usage_s, "cost": cost, "usage": usage}


def _count(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM usage_intervals").scalar_one())


def reports(replicas: int, days: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        engine = open_engine(f"sqlite:///{folder}/state.db")
        _seed(engine, replicas, days)
        period = Period(T0, T0 + days * 86400)
        raw_rows = _count(engine)
        raw = _reports(engine, period)
        began = time.perf_counter()
        passes = 0
        while passes < 1000 and compact(engine, period.until + FINE_S) > 0:
            passes += 1
        compact_s = time.perf_counter() - began
        rows = _count(engine)
        merged = _reports(engine, period)
        engine.dispose()
    same = all(
        abs(a["cost"] - b["cost"]) < 1e-6 and a["reserved_hours"] == b["reserved_hours"]
        for a, b in zip(raw["cost"]["teams"], merged["cost"]["teams"], strict=True)
    )
    return {
        "replicas": replicas,
        "days": days,
        "raw": {"rows": raw_rows, "cost_s": raw["cost_s"], "usage_s": raw["usage_s"]},
        "compacted": {"rows": rows, "cost_s": merged["cost_s"], "usage_s": merged["usage_s"]},
        "compaction_s": compact_s,
        "compaction_passes": passes,
        "same_figures": same,
        "nodes_cost": merged["cost"]["nodes_cost"],
        "ratios": {
            "rows": raw_rows / rows,
            "cost": raw["cost_s"] / merged["cost_s"],
            "usage": raw["usage_s"] / merged["usage_s"],
        },
    }


class _Slots:
    def __init__(self, pids: Sequence[int]) -> None:
        self.slots = [
            ReplicaSlot(
                endpoint=f"e{i}",
                route="r",
                version="m:1",
                replica=0,
                pid=pid,
                team="t",
                tier="standard",
                cpu_milli=1000,
                memory_mib=512,
            )
            for i, pid in enumerate(pids)
        ]

    def replicas(self) -> list[ReplicaSlot]:
        return self.slots


def sample(processes: int) -> dict[str, Any]:
    code = "import sys, time; print('ready', flush=True); time.sleep(600)"
    started = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    try:
        for process in started:
            assert process.stdout is not None
            process.stdout.readline()
        with tempfile.TemporaryDirectory() as folder:
            engine = open_engine(f"sqlite:///{folder}/state.db")
            node = NodeSpec(name="n1", cpu_milli=2000, memory_mib=4096)
            sampler = UsageSampler(engine, _Slots([p.pid for p in started]), lambda: [node])
            seconds, _ = _best(lambda: asyncio.run(sampler.sample()), 20)
            flush_s, _ = _best(lambda: asyncio.run(sampler.flush()), 5)
            engine.dispose()
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
    return {"processes": processes, "sample_ms": seconds * 1000, "flush_ms": flush_s * 1000}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="5 replicas over 2 days")
    args = parser.parse_args(argv)
    replicas, days = (5, 2) if args.quick else (args.replicas, args.days)
    found = {"reports": reports(replicas, days), "sample": sample(args.processes)}
    found["machine"] = {"python": platform.python_version(), "cpus": len(_affinity())}
    console = Console()
    r = found["reports"]
    table = Table(title=f"reports over {days} days of {replicas} replicas (best of 3)")
    for column in ("", "rows", "cost report s", "usage report s"):
        table.add_column(column)
    for name in ("raw", "compacted"):
        table.add_row(
            name, f"{r[name]['rows']:,}", f"{r[name]['cost_s']:.3f}", f"{r[name]['usage_s']:.3f}"
        )
    ratios = r["ratios"]
    table.add_row(
        "raw / compacted",
        f"{ratios['rows']:.1f}x",
        f"{ratios['cost']:.1f}x",
        f"{ratios['usage']:.1f}x",
    )
    console.print(table)
    console.print(
        f"compaction {r['compaction_s']:.1f} s in {r['compaction_passes']} passes; "
        f"same figures: {r['same_figures']}; teams + idle = nodes on both"
    )
    s = found["sample"]
    console.print(
        f"one sample of {s['processes']} processes: {s['sample_ms']:.2f} ms; "
        f"a flush: {s['flush_ms']:.2f} ms"
    )
    out = REPO / "bench" / "results" / "usage.json"
    out.write_text(json.dumps(found, indent=2) + "\n")
    console.print(f"wrote {out.relative_to(REPO)}")


def _affinity() -> set[int]:
    import os

    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}


if __name__ == "__main__":
    main()

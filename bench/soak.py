"""Issue 10's soak: the chaos suite's long form, for a bounded number of minutes.

The engine of ``tests/chaos/`` (``modelplane up`` on a throwaway PostgreSQL database with
Redis as its online store, steady load on three endpoints) runs rounds of every fault, each
round in a seeded random order, with a calm pause before each fault, until ``--minutes``
have passed; the last fault's recovery is awaited (at most 30 s), so a run ends within a
minute of its deadline. It reports:

- requests answered, and failures by cause (the fault they are attributed to, or
  ``unattributed``: lost, aim 0);
- time to recover after each fault, against the aims (both replicas of an endpoint killed:
  serving within 3 s; ``up`` restarted: serving within 5 s of its start);
- memory of ``up`` and its workers sampled every second, and the last 5 minutes against the
  first 5 after warm-up (aim: within 10 %).

Prints the tables, writes ``bench/results/soak.json`` and ``bench/results/soak.png``.

    .venv/bin/python bench/soak.py [--minutes 20] [--seed 10] [--rate 20] [--kinds a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
# run as a script, only bench/ is on sys.path; the engine lives in tests/chaos
sys.path.insert(0, str(REPO))

from tests.chaos.engine import ChaosConfig, chaos_world, run_chaos  # noqa: E402
from tests.chaos.faults import FAULTS, FaultSettings  # noqa: E402
from tests.chaos.report import AIMS_S, ChaosReport  # noqa: E402
from tests.chaos.world import chaos_redis_url  # noqa: E402

__all__ = ["main"]

RESULTS = REPO / "bench" / "results" / "soak.json"
PLOT = REPO / "bench" / "results" / "soak.png"
POSTGRES_URL = os.environ.get(
    "MODELPLANE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("MODELPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MEMORY_AIM = 0.10


def _within(value: float | None, aim: float) -> bool:
    return value is not None and value <= aim


def verdicts(report: ChaosReport, minutes: float) -> dict[str, Any]:
    """Each aim of the issue, met or not, with the figure it was judged on."""
    worst: dict[str, float | None] = {}
    for kind in AIMS_S:
        runs = [f for f in report.faults if f.kind == kind]
        values = [f.worst_recovery_s for f in runs]
        worst[kind] = (
            None if not runs or None in values else max(v for v in values if v is not None)
        )
    memory = report.memory
    return {
        "lost_requests": {"value": report.lost, "aim": 0, "met": report.lost == 0},
        **{
            f"recovery_{kind}_s": {
                "value": worst[kind],
                "aim": aim,
                "met": _within(worst[kind], aim),
                "judged": any(f.kind == kind for f in report.faults),
            }
            for kind, aim in AIMS_S.items()
        },
        "memory_change": {
            "value": None if memory is None else memory.change,
            "window_s": None if memory is None else memory.window_s,
            "aim": MEMORY_AIM,
            # judged on 5-minute windows only, i.e. a run of 11 minutes or more
            "met": memory is not None and memory.window_s >= 300 and abs(memory.change) <= 0.1,
            "judged": minutes >= 11,
        },
    }


def plot(report: ChaosReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report.samples
    if not samples:
        return
    zero = report.started_at
    figure, (memory, failures) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    xs = [s.at - zero for s in samples]
    memory.plot(xs, [s.up_bytes / 2**20 for s in samples], label="up (gateway, API, controllers)")
    memory.plot(xs, [s.workers_bytes / 2**20 for s in samples], label="workers + forkserver")
    memory.plot(xs, [(s.up_bytes + s.workers_bytes) / 2**20 for s in samples], label="total")
    memory.set_ylabel("resident MB")
    memory.legend(loc="upper left")
    buckets: dict[str, dict[int, int]] = {}
    for at, _, cause in report.failures:
        per = buckets.setdefault(cause, {})
        per[int(at // 5)] = per.get(int(at // 5), 0) + 1
    for cause, per in sorted(buckets.items()):
        keys = sorted(per)
        failures.bar([k * 5 for k in keys], [per[k] for k in keys], width=5, label=cause,
                     alpha=0.7, align="edge")  # fmt: skip
    for fault in report.faults:
        for axis in (memory, failures):
            axis.axvline(fault.at_s, color="grey", lw=0.5, alpha=0.5)
    failures.set_ylabel("failed requests / 5 s")
    failures.set_xlabel("seconds since the load started (grey: a fault)")
    if buckets:
        failures.legend(loc="upper left", fontsize=7)
    figure.suptitle(f"soak: {report.requests:,} requests, {report.lost} lost")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="fault rounds for this long")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s to each endpoint")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the 1st fault")
    parser.add_argument("--flood", type=int, default=3000, help="idle sockets opened at once")
    parser.add_argument(
        "--kinds", default=",".join(FAULTS), help="faults to inject, comma-separated (all)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = sorted(set(kinds) - set(FAULTS))
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    console = Console(width=160)
    config = ChaosConfig(
        seed=args.seed,
        minutes=args.minutes,
        rate_per_s=args.rate,
        warmup_s=args.warmup,
        calm_s=(8.0, 15.0),
        kinds=kinds,
        faults=FaultSettings(flood_sockets=args.flood),
    )

    # every wait in the engine is bounded; this bounds the whole run should one not be
    def overran(signum: int, frame: object) -> None:
        raise TimeoutError(f"the soak ran past its bound of {bound_s} s")

    bound_s = int(args.minutes * 60 + args.warmup + 600)
    signal.signal(signal.SIGALRM, overran)
    signal.alarm(bound_s)
    began = datetime.now(UTC)
    load_before = os.getloadavg()
    with chaos_world(POSTGRES_URL, chaos_redis_url(REDIS_URL)) as world:
        report = run_chaos(world, config, console)
        exit_code = world.stop()
    signal.alarm(0)
    report.print(console)
    judged = verdicts(report, args.minutes)
    for name, verdict in judged.items():
        mark = "met" if verdict["met"] else "MISSED"
        if not verdict.get("judged", True):
            mark = "not judged (no such fault, or a run too short)"
        console.print(f"aim {name}: {verdict['value']} (aim {verdict['aim']}): {mark}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "started": began.isoformat(timespec="seconds"),
        "seconds": round(time.time() - began.timestamp(), 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "config": {"minutes": args.minutes, "seed": args.seed, "rate_per_s": args.rate,
                   "warmup_s": args.warmup, "flood_sockets": args.flood, "kinds": kinds},
        "up_exit_code": exit_code,
        "aims": judged,
        "report": report.to_json(),
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(report, args.out.with_suffix(".png") if args.out != RESULTS else PLOT)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Issue 12: what keeping a brief record of every request costs the gateway's hot path.

One gateway (``ServerThread``) serving ``plain`` (ONNX logistic regression, as in
``bench/rollout.py``'s shadow measure) with the prediction log on an embedded SQLite store
(sample rate 0.01), once with the request log on (every request not sampled written, in
batches, to ``request_log``) and once off; closed-loop load from a separate client process
at concurrency 8. Runs alternate on and off, a fresh gateway each, so drift in the shared
machine's load hits both alike. Throughput on two shared cores is noisy, so it also times
the two costs alone: building and queueing a brief record (on the event loop) and writing
its row (in the flusher's thread), as a share of a request's time. Prints one table and
writes ``bench/results/request_log.json``.

    .venv/bin/python bench/request_log.py [--repeats 3] [--run-s 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import (  # noqa: E402
    latency_summary,
    on_off_table,
    paired_on_off,
    prediction_log_run,
)
from bench.rollout import _shadow_endpoints  # noqa: E402

__all__ = ["main"]

RESULTS = REPO / "bench" / "results" / "request_log.json"
CONCURRENCY = 8
AIM_RATIO = 0.95
"""Throughput with the request log on, over off: within a few percent."""


def _one_run(configs: list[Any], home: Path, keep: bool, run_s: float) -> dict[str, Any]:
    from modelplane.observe.predlog import PredictionLogConfig

    config = PredictionLogConfig(keep_every_request=keep)
    run, sink = prediction_log_run(configs, home, config, run_s, CONCURRENCY)
    return run | {"brief_dropped": sink.dropped_brief, "predictions_written": sink.written}


def _unit_costs(home: Path, n: int = 20_000) -> dict[str, float]:
    """Microseconds per request on the event loop (a brief record built and queued) and in
    the flusher's thread (its row written in batches), measured alone, free of the noise a
    shared machine puts in throughput."""
    import asyncio

    from modelplane.observe.predlog import PredictionLog, PredictionLogConfig
    from modelplane.observe.records import PredictionRecord, RequestTrace, split_latency
    from modelplane.store.db import open_engine

    engine = open_engine(f"sqlite:///{home / 'state.db'}")
    sink = PredictionLog(engine, PredictionLogConfig(request_capacity=n))
    trace = RequestTrace(started_at=time.monotonic(), enqueued_at=time.monotonic())
    began = time.perf_counter()
    for i in range(n):
        latency = split_latency(trace, time.monotonic())
        sink.offer(PredictionRecord(f"r{i}", time.time(), "plain", "plain", 1, 200, latency,
                                    "lr:1", "sha256:" + "0" * 64, "lr:1", brief=True))  # fmt: skip
    queued = time.perf_counter()
    asyncio.run(sink.flush())
    written = time.perf_counter()
    engine.dispose()
    return {"hot_path_us": (queued - began) / n * 1e6, "write_us": (written - queued) / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-s", type=float, default=4.0)
    opts = parser.parse_args()
    console = Console(width=max(Console().width, 110))
    loadavg_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="modelplane-request-log-bench-") as tmp:
        configs = _shadow_endpoints(Path(tmp))
        runs = paired_on_off(
            Path(tmp),
            opts.repeats,
            lambda home, on: _one_run(configs, home, on, opts.run_s),
            console.log,
        )
        costs = _unit_costs(Path(tmp))
    title = f"request log on vs off, c={CONCURRENCY}, {opts.repeats} x {opts.run_s:g} s"
    summary, ratio, table = on_off_table(title, runs)
    dropped = sum(r["brief_dropped"] for r in runs["on"])
    table.add_row("brief records dropped (queue full)", "", str(dropped), "")
    per_request_us = 1e6 / summary["off"]["rps"]
    for key, label in (("hot_path_us", "on the loop"), ("write_us", "in the writer thread")):
        share = costs[key] / per_request_us
        table.add_row(f"us per request {label}", "", f"{costs[key]:.1f}", f"{share:.1%}")
    met = "met" if ratio["rps"] >= AIM_RATIO else "missed"
    table.caption = f"aim: throughput on/off >= {AIM_RATIO} ({met}); load {os.getloadavg()}"
    console.print(table)
    results = {
        "command": [Path(sys.executable).name, *sys.argv],
        "concurrency": CONCURRENCY,
        "repeats": opts.repeats,
        "run_s": opts.run_s,
        "summary": summary,
        "ratio_on_over_off": ratio,
        "brief_dropped": dropped,
        "unit_costs_us": costs,
        "aim_rps_ratio": AIM_RATIO,
        "per_run": {name: [latency_summary([one]) for one in done] for name, done in runs.items()},
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.log(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

"""Issue 15.1: what keeping every answer for the outcome join costs, and how fast the join is.

1. ``gateway``: one gateway (``ServerThread``) serving ``plain`` (ONNX logistic regression,
   as in ``bench/request_log.py``) with the prediction log on an embedded SQLite store
   (request log on, sample rate 0.01), once keeping answers (outputs and feature-set
   versions written beside each request-log row) and once not; closed-loop load from a
   separate client process at concurrency 8. Runs alternate, a fresh gateway each, so drift
   in the shared machine's load hits both alike. Throughput ratio answers on / off.
2. ``unit_costs``: the two costs alone, free of throughput noise: building a record that
   holds the outputs (on the event loop; the arrays are referenced, not converted) against
   one that does not, and writing a row with its answer against without (in the flusher's
   thread), in microseconds and as a share of a request's time.
3. ``report``: ``outcomes_by_version`` over N labelled answers (SQLite): the time a
   ``modelplane outcomes`` or an outcome recorder pass takes.

Prints one table and writes ``bench/results/outcomes.json``.

    .venv/bin/python bench/outcomes.py [--repeats 3] [--run-s 4] [--labels 50000]
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

import numpy as np
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

RESULTS = REPO / "bench" / "results" / "outcomes.json"
CONCURRENCY = 8
AIM_RATIO = 0.97
"""Throughput keeping answers over not: within the noise of the shared machine."""


def _one_run(configs: list[Any], home: Path, answers: bool, run_s: float) -> dict[str, Any]:
    from modelplane.observe.predlog import PredictionLogConfig

    config = PredictionLogConfig(keep_answers=answers)
    run, sink = prediction_log_run(configs, home, config, run_s, CONCURRENCY)
    return run | {"brief_dropped": sink.dropped_brief}


def _record(i: int, outputs: Any) -> Any:
    from modelplane.observe.records import LatencySplit, PredictionRecord

    return PredictionRecord(f"r{i}", time.time(), "plain", "plain", 1, 200,
                            LatencySplit(0.1, 0.1, 1.0, 1.2), "lr:1", "sha256:" + "0" * 64,
                            "lr:1", brief=True, outputs=outputs)  # fmt: skip


def _unit_costs(home: Path, n: int = 10_000, trials: int = 5) -> dict[str, float]:
    """Each cost measured ``trials`` times, alternating with its pair, and the least kept:
    on a shared machine the least is the cost, the rest is other people's work."""
    from modelplane.observe.predlog import write_requests
    from modelplane.store.db import open_engine

    p = np.full((1, 1), 0.7)
    outputs = {"label": np.array([1]), "probabilities": np.c_[1 - p, p]}
    out: dict[str, float] = {}
    engine = open_engine(f"sqlite:///{home / 'unit.db'}")
    records = [_record(i, outputs) for i in range(n)]
    for _ in range(trials):
        for name, given in (("record_without_us", None), ("record_with_us", outputs)):
            began = time.perf_counter()
            for i in range(n):
                _record(i, given)
            out[name] = min(out.get(name, 1e9), (time.perf_counter() - began) / n * 1e6)
        for name, answers in (("write_without_us", False), ("write_with_us", True)):
            began = time.perf_counter()
            for start in range(0, n, 500):
                write_requests(engine, records[start : start + 500], answers)
            out[name] = min(out.get(name, 1e9), (time.perf_counter() - began) / n * 1e6)
    engine.dispose()
    return out


def _report_time(home: Path, labels: int) -> dict[str, float]:
    from modelplane.observe.outcome_report import outcomes_by_version
    from modelplane.observe.outcomes import Feedback, OutcomeStore
    from modelplane.observe.predlog import write_requests
    from modelplane.store.db import open_engine

    engine = open_engine(f"sqlite:///{home / 'report.db'}")
    rng = np.random.default_rng(1)
    scores = rng.random(labels)
    records = []
    for i in range(labels):
        p = np.array([[1 - scores[i], scores[i]]])
        record = _record(i, {"probabilities": p})
        records.append(record)
    for start in range(0, labels, 5000):
        write_requests(engine, records[start : start + 5000])
    feedback = [Feedback(f"r{i}", float(rng.random() < scores[i])) for i in range(labels)]
    began = time.perf_counter()
    OutcomeStore(engine).ingest_many("plain", feedback, source="bench")
    ingested = time.perf_counter() - began
    began = time.perf_counter()
    report = outcomes_by_version(engine, "plain")
    took = time.perf_counter() - began
    engine.dispose()
    assert report.versions[0].labelled_rows == labels
    return {"labels": float(labels), "report_s": took, "ingest_rows_per_s": labels / ingested}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-s", type=float, default=4.0)
    parser.add_argument("--labels", type=int, default=50_000)
    opts = parser.parse_args()
    console = Console(width=max(Console().width, 110))
    loadavg_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="modelplane-outcomes-bench-") as tmp:
        configs = _shadow_endpoints(Path(tmp))
        # the order flips every repeat: the second run of a pair starts while the first
        # one's workers are still going away
        runs = paired_on_off(
            Path(tmp),
            opts.repeats,
            lambda home, on: _one_run(configs, home, on, opts.run_s),
            console.log,
            alternate=True,
        )
        costs = _unit_costs(Path(tmp))
        report = _report_time(Path(tmp), opts.labels)
    title = f"answers kept vs not, c={CONCURRENCY}, {opts.repeats} x {opts.run_s:g} s"
    summary, ratio, table = on_off_table(title, runs, ("answers off", "answers on"))
    per_request_us = 1e6 / summary["off"]["rps"]
    for what, off_key, on_key in (("record built (event loop)", "record_without_us",
                                   "record_with_us"),
                                  ("row written (writer thread)", "write_without_us",
                                   "write_with_us")):  # fmt: skip
        extra = costs[on_key] - costs[off_key]
        table.add_row(f"us per request, {what}", f"{costs[off_key]:.2f}", f"{costs[on_key]:.2f}",
                      f"+{extra / per_request_us:.1%} of a request")  # fmt: skip
    table.add_row(f"outcomes_by_version over {opts.labels:,} labels", "",
                  f"{report['report_s']:.2f} s", "")  # fmt: skip
    table.add_row("feedback ingested (in process, SQLite)", "",
                  f"{report['ingest_rows_per_s']:,.0f} rows/s", "")  # fmt: skip
    met = "met" if ratio["rps"] >= AIM_RATIO else "missed"
    table.caption = f"aim: req/s on/off >= {AIM_RATIO} ({met}); load {os.getloadavg()}"
    console.print(table)
    results = {
        "command": [Path(sys.executable).name, *sys.argv],
        "concurrency": CONCURRENCY,
        "repeats": opts.repeats,
        "run_s": opts.run_s,
        "summary": summary,
        "ratio_on_over_off": ratio,
        "unit_costs_us": costs,
        "report": report,
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

"""Jobs benchmark: batch scoring through the job path against a plain loop, shard start,
and the time from a preemption signal to the capacity being free.

Side by side in one run, on the same Parquet file and the same ONNX model (a logistic
regression over four columns, as the tests use):

* **plain loop**: one process reads the file batch by batch, calls the serving runtime
  (:func:`modelplane.backends.jobs.runner.load_model`) and writes the same output table
  (request ids, version and digest, the outputs) to one Parquet file;
* **job, 1 shard**: planning and checks, then one shard as a sandboxed process of
  :class:`LocalShardExecutor` (fork from its warm template, sandbox, digest check, load,
  score, write, commit), timed from the plan to the committed file;
* **job, 2 shards**: the same with two shards at once (two processes, two cores).

Then a one-row shard, start to done (the overhead of a shard's start: fork, sandbox,
verification, load, first row, commit; and once, the executor's first shard, which also
starts the template), and the time from ``stop`` (SIGTERM) to the shard's process being
gone, ``--runs`` times each (medians). One executor serves the whole run, as one serves
``modelplane up``.

    .venv/bin/python bench/jobs.py [--rows 2000000] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.backends.jobs.models import JobModel, fetch_package, resolve_model
from modelplane.backends.jobs.plan import claim_output, plan_batch_score, shard_task
from modelplane.backends.jobs.runner import load_model, output_table
from modelplane.core.jobs import OutcomeStatus, ShardOutcome, ShardTask
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry
from modelplane.security.sandbox import SandboxPolicy
from modelplane.spec.io import parse
from modelplane.spec.job import BatchScoreJob, Job

RESULTS = Path(__file__).parent / "results" / "jobs.json"
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]
BATCH_ROWS = 8192
console = Console(width=120)


def frame_of(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "txn_id": np.arange(rows, dtype=np.int64),
        "amount": rng.gamma(2.0, 40.0, rows),
        "age_days": rng.uniform(0, 2000, rows),
        "merchant_risk": rng.beta(2, 5, rows),
        "night": rng.integers(0, 2, rows).astype(float),
    })  # fmt: skip


def setup(root: Path, rows: int) -> tuple[Registry, JobModel, Path, Path]:
    registry = open_registry(f"sqlite:///{root}/state.db", str(root / "art"), actor="bench")
    train = frame_of(2000, seed=1)
    features = train[COLUMNS].astype(np.float32)
    target = (train.merchant_risk + 0.2 * train.night > 0.4).astype(int)
    pipe = make_pipeline(
        ColumnTransformer([("columns", "passthrough", COLUMNS)]), LogisticRegression(max_iter=500)
    ).fit(features, target)
    proto = to_onnx(pipe, features.head(), options={"zipmap": False}, target_opset=17)
    built = package(
        proto, name="fraud", output_dir=root / "pkg", sample_input=train[COLUMNS].head()
    )
    registry.push(built.path)
    model = resolve_model(registry, "fraud:1")
    folder = fetch_package(registry, model, root / "cache")
    dataset = root / "rows.parquet"
    table = pa.Table.from_pandas(frame_of(rows), preserve_index=False)
    pq.write_table(table, dataset, row_group_size=64_000)
    return registry, model, folder, dataset


def job_of(dataset: Path, output: Path, **work: Any) -> Job:
    spec = {"type": "batch-score", "model": "fraud:1", "input": {"url": str(dataset)},
            "output": {"url": str(output)}, "passthrough": ["txn_id"], "batch_rows": BATCH_ROWS,
            **work}  # fmt: skip
    return parse(Job, {"name": "bench", "team": "bench", "work": spec})


def tasks_for(
    job: Job, uid: str, model: JobModel, folder: Path, attempt: int = 1
) -> list[ShardTask]:
    assert isinstance(job.work, BatchScoreJob)
    signature = model.manifest.signature
    _, plans = plan_batch_score(job.work, signature, uid)
    claim_output(job.work.output, uid)
    return [
        shard_task(job, uid, p, 1, model_ref=model.ref, model_digest=model.digest,
                   model_dir=str(folder), signature=signature)
        for p in plans
    ]  # fmt: skip


def run_until_done(
    executor: LocalShardExecutor, count: int, limit_s: float = 900
) -> list[ShardOutcome]:
    outcomes: list[ShardOutcome] = []
    deadline = time.monotonic() + 900
    while len(outcomes) < count and time.monotonic() < deadline:
        outcomes += executor.wait(1.0)
    failed = [o.error for o in outcomes if o.status is not OutcomeStatus.DONE]
    if failed or len(outcomes) < count:
        raise SystemExit(f"shards did not finish: {failed}")
    return outcomes


def plain_loop(dataset: Path, output: Path, model: JobModel, folder: Path, job: Job) -> float:
    """Seconds for one process to read, score and write every row (threads: 1)."""
    started = time.perf_counter()
    loaded = load_model(str(folder), model.digest)
    task = tasks_for(job, "plain", model, folder)[0]
    file = pq.ParquetFile(dataset)
    writer: pq.ParquetWriter | None = None
    row = 0
    for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=[*COLUMNS, "txn_id"]):
        chunk = pa.Table.from_batches([batch])
        outputs = loaded.predict({c: chunk.column(c).to_numpy() for c in COLUMNS})
        piece = output_table(task, chunk, outputs, row)
        writer = writer or pq.ParquetWriter(output, piece.schema)
        writer.write_table(piece)
        row += chunk.num_rows
    assert writer is not None
    writer.close()
    return time.perf_counter() - started


def job_path(
    executor: LocalShardExecutor,
    dataset: Path,
    out: Path,
    model: JobModel,
    folder: Path,
    shards: int,
) -> tuple[float, list[ShardOutcome]]:
    """Plan, check, claim, run ``shards`` shards at once and commit them: seconds."""
    started = time.perf_counter()
    job = job_of(dataset, out, shard={"count": shards})
    tasks = tasks_for(job, f"{out.name}-{shards}", model, folder)
    for task in tasks:
        executor.start(task)
    outcomes = run_until_done(executor, len(tasks))
    return time.perf_counter() - started, outcomes


def shard_start(
    executor: LocalShardExecutor,
    root: Path,
    dataset: Path,
    model: JobModel,
    folder: Path,
    run: int,
) -> float:
    """Start to done of a one-row shard: what every shard pays besides its rows."""
    one = root / f"one-{run}.parquet"
    pq.write_table(pq.read_table(dataset).slice(0, 1), one)
    job = job_of(one, root / f"start-{run}")
    [task] = tasks_for(job, f"start-{run}", model, folder)
    started = time.perf_counter()
    executor.start(task)
    run_until_done(executor, 1)
    return time.perf_counter() - started


def preemption(
    executor: LocalShardExecutor,
    root: Path,
    dataset: Path,
    model: JobModel,
    folder: Path,
    run: int,
) -> float:
    """Seconds from ``stop`` (SIGTERM) until the shard's process no longer exists."""
    job = job_of(dataset, root / f"preempt-{run}", shard={"count": 1}, batch_rows=1)
    [task] = tasks_for(job, f"preempt-{run}", model, folder)
    executor.start(task)
    deadline = time.monotonic() + 120
    while not Path(task.temp_path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the shard is scoring once its staging file exists
    pid = executor.pid(task.attempt_id)
    assert pid is not None
    started = time.perf_counter()
    executor.stop(task.attempt_id, reason=OutcomeStatus.PREEMPTED, grace_s=5.0)
    while psutil.pid_exists(pid) and time.perf_counter() - started < 30:
        time.sleep(0.001)
    gone = time.perf_counter() - started
    [outcome] = executor.poll()
    assert outcome.status is OutcomeStatus.PREEMPTED
    return gone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 2 runs")
    args = parser.parse_args()
    rows, runs = (200_000, 2) if args.quick else (args.rows, args.runs)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        root = Path(tmp)
        registry, model, folder, dataset = setup(root, rows)
        executor = LocalShardExecutor(sandbox=SandboxPolicy())
        # the executor's first shard also starts its template (once per executor)
        cold = shard_start(executor, root, dataset, model, folder, -1)
        plain, one, two = [], [], []
        for i in range(runs):  # interleaved, so the machine's drift hits every path
            plain.append(plain_loop(dataset, root / f"plain-{i}.parquet", model, folder,
                                    job_of(dataset, root / f"plain-{i}")))  # fmt: skip
            one.append(job_path(executor, dataset, root / f"one-{i}", model, folder, 1))
            two.append(job_path(executor, dataset, root / f"two-{i}", model, folder, 2))
        starts = [shard_start(executor, root, dataset, model, folder, i) for i in range(runs)]
        stops = [preemption(executor, root, dataset, model, folder, i) for i in range(runs)]
        executor.close()
        registry.close()
    plain_s = statistics.median(plain)
    one_s = statistics.median(t for t, _ in one)
    two_s = statistics.median(t for t, _ in two)
    cpu_one = statistics.median(sum(o.cpu_seconds for o in outs) for _, outs in one)
    peak_one = statistics.median(max(o.peak_memory_mib for o in outs) for _, outs in one)
    summary = {
        "rows": rows,
        "runs": runs,
        "cores": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "plain_loop": {"seconds": plain_s, "rows_per_s": rows / plain_s},
        "job_one_shard": {"seconds": one_s, "rows_per_s": rows / one_s,
                          "ratio_to_plain": plain_s / one_s, "aim": 0.8,
                          "shard_cpu_seconds": cpu_one, "shard_peak_rss_mib": peak_one},
        "job_two_shards": {"seconds": two_s, "rows_per_s": rows / two_s,
                           "ratio_to_plain": plain_s / two_s, "aim": 1.7},
        "shard_start_s": {"median": statistics.median(starts), "all": starts,
                          "first_with_template_start": cold},
        "preemption_to_free_s": {"median": statistics.median(stops), "all": stops},
        "model": "ONNX logistic regression, 4 float columns, batch_rows 8192",
        "python": sys.version.split()[0],
    }  # fmt: skip
    load = f"load {summary['load_average_1m']:.1f} on {os.cpu_count()} cores"
    table = Table(title=f"batch scoring, {rows:,} rows, medians of {runs} ({load})")
    for column in ("path", "seconds", "rows/s", "vs plain loop", "aim"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("plain loop, one process", f"{plain_s:.2f}", f"{rows / plain_s:,.0f}", "1.00", "")
    table.add_row("job, 1 shard (sandboxed process)", f"{one_s:.2f}", f"{rows / one_s:,.0f}",
                  f"{plain_s / one_s:.2f}", ">= 0.8")  # fmt: skip
    table.add_row("job, 2 shards at once", f"{two_s:.2f}", f"{rows / two_s:,.0f}",
                  f"{plain_s / two_s:.2f}", ">= 1.7")  # fmt: skip
    console.print(table)
    other = Table(title="shard lifecycle, medians")
    other.add_column("what")
    other.add_column("seconds", justify="right")
    other.add_row("first shard of an executor (template start)", f"{cold:.3f}")
    other.add_row("one-row shard, start to committed", f"{statistics.median(starts):.3f}")
    other.add_row("preemption: SIGTERM to process gone", f"{statistics.median(stops):.4f}")
    console.print(other)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Materialize benchmark: a feature-set backfill as a job against ``features materialize``.

Side by side in one run, on the same Parquet file of customer rows, into the same Redis
(``redis://127.0.0.1:6379/0`` unless ``--redis``), each variant into its own version of a
bench-only feature set so none finds another's rows:

* **features materialize**: :func:`modelplane.features.materialize.materialize` in this
  process, as ``modelplane features materialize`` runs (no checkpoint file);
* **job, 1 shard**: planning and checks (:class:`JobsPlanner`), then one shard as a process
  of :class:`LocalShardExecutor` (fork from its warm template, read its rows, check and
  write them, commit its receipt), timed from the plan to the committed receipt;
* **job, 2 shards**: the same with two shards at once.

Then the same job run again: every shard finds its receipt and reports done without
writing (a resumed job). The bench's keys are deleted from Redis at the end.

    .venv/bin/python bench/jobs_kinds.py [--rows 200000] [--quick]
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
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import redis
from rich.console import Console
from rich.table import Table

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.backends.jobs.planner import JobsPlanner
from modelplane.core.jobs import OutcomeStatus, ShardOutcome
from modelplane.features.materialize import materialize
from modelplane.features.stores import open_online_store
from modelplane.registry.service import Registry, open_registry
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.io import parse
from modelplane.spec.job import Job
from modelplane.store.resources import ResourceStore

RESULTS = Path(__file__).parent / "results" / "jobs_kinds.json"
SET_NAME = "bench-jobs-kinds"


def customers(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "customer_id": np.arange(rows, dtype=np.int64),
            "event_time": 1_767_225_600.0 + rng.uniform(0, 86_400, rows),
            "txn_count_7d": rng.integers(0, 40, rows),
            "avg_amount_30d": rng.gamma(2.0, 40.0, rows),
            "chargebacks_90d": rng.integers(0, 3, rows),
        }
    )


def feature_set(version: int) -> FeatureSet:
    return parse(FeatureSet, {
        "name": SET_NAME, "version": version, "team": "bench", "freshness": {"max_age_s": 3600},
        "entity": {"name": "customer_id", "dtype": "int64"},
        "features": [{"name": "txn_count_7d", "dtype": "int64"},
                     {"name": "avg_amount_30d", "dtype": "float64"},
                     {"name": "chargebacks_90d", "dtype": "int64"}],
    })  # fmt: skip


def run_job(
    planner: JobsPlanner, executor: LocalShardExecutor, data: Path, version: int, shards: int,
    uid: str,
) -> tuple[float, list[ShardOutcome]]:  # fmt: skip
    work = {"type": "materialize", "feature_set": f"{SET_NAME}:{version}",
            "input": {"url": str(data)}, "shard": {"count": shards}}  # fmt: skip
    job = parse(Job, {"name": f"bench-{uid}", "team": "bench", "parallelism": {"max": shards},
                      "work": work})  # fmt: skip
    started = time.perf_counter()
    planned = planner.plan(job, uid)
    planner.claim(job, uid, planned)
    for plan in planned.shards:
        executor.start(planner.task(job, uid, plan, 1, planned))
    outcomes: list[ShardOutcome] = []
    deadline = time.monotonic() + 3600
    while len(outcomes) < len(planned.shards) and time.monotonic() < deadline:
        outcomes += executor.wait(1.0)
    seconds = time.perf_counter() - started
    failed = [o.error for o in outcomes if o.status is not OutcomeStatus.DONE]
    if failed or len(outcomes) < len(planned.shards):
        raise SystemExit(f"the job did not finish: {failed}")
    return seconds, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="20,000 rows")
    args = parser.parse_args()
    rows = 20_000 if args.quick else args.rows
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-kinds-"))
    data = work / "customers.parquet"
    pq.write_table(pa.Table.from_pandas(customers(rows), preserve_index=False), data,
                   row_group_size=10_000)  # fmt: skip
    registry: Registry = open_registry(f"sqlite:///{work}/state.db", str(work / "art"),
                                       actor="bench")  # fmt: skip
    resources = ResourceStore(registry.engine)
    for version in (1, 2, 3):
        spec = feature_set(version)
        resources.apply("FeatureSet", spec.ref, spec.model_dump(mode="json"), actor="bench")
    planner = JobsPlanner(registry, work / "cache", state_dir=work / "jobs",
                          feature_store_url=args.redis)  # fmt: skip
    executor = LocalShardExecutor()
    results: dict[str, Any] = {}
    try:
        store = open_online_store(args.redis)
        started = time.perf_counter()
        materialize(store, feature_set(1), data, progress=False)
        results["features materialize"] = time.perf_counter() - started
        store.close()
        run_job(planner, executor, data, 2, 1, "warm")  # starts the template, untimed
        results["job, 1 shard"], _ = run_job(planner, executor, data, 2, 1, "one")
        results["job, 2 shards"], _ = run_job(planner, executor, data, 3, 2, "two")
        again, outcomes = run_job(planner, executor, data, 3, 2, "two")
        assert all(o.reused for o in outcomes)
        results["job, 2 shards again (receipts found)"] = again
    finally:
        executor.close()
        registry.close()
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=f"mp:fs:{SET_NAME}:*", count=10_000):
            client.delete(key)

    base = results["features materialize"]
    table = Table(title=f"materialize {rows:,} rows into Redis (load {os.getloadavg()[0]:.1f}"
                        f" on {os.cpu_count()} cores)")  # fmt: skip
    for column in ("path", "seconds", "rows/s", "vs features materialize"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, seconds in results.items():
        table.add_row(name, f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{base / seconds:.2f}x")
    console.print(table)
    summary = {
        "command": " ".join(["bench/jobs_kinds.py", *sys.argv[1:]]),
        "rows": rows,
        "load_1m": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "seconds": results,
        "ratio_to_features_materialize": {k: base / v for k, v in results.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

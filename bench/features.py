"""Feature store benchmark: lookup latency on SQLite and Redis, materialize throughput.

* p50 / p99 of a 1-row and a 64-row lookup of 50 features, 16 threads at once, against
  10,000 stored entities, on the SQLite and the Redis online store;
* materializing ``--rows`` rows x 20 features from Parquet into Redis, as rows/s and as a
  ratio to raw pipelined HSET of the same rows, read the same way, in the same run.

    .venv/bin/python bench/features.py [--rows 1000000] [--redis-url redis://127.0.0.1:6379/0]

Keys live under a fresh prefix that is deleted afterwards. Writes ``bench/results/features.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis
from rich.console import Console
from rich.table import Table

from modelplane.features.base import OnlineStore
from modelplane.features.materialize import materialize
from modelplane.features.redis import RedisOnlineStore
from modelplane.features.sqlite import SqliteOnlineStore
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.io import parse

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results"
console = Console(width=120)
ENTITIES = 10_000
THREADS = 16
SEED = 5


def featureset(name: str, features: int) -> FeatureSet:
    return parse(
        FeatureSet,
        {
            "name": name,
            "version": 1,
            "team": "bench",
            "entity": {"name": "entity_id", "dtype": "int64"},
            "features": [{"name": f"f{i}", "dtype": "float64"} for i in range(features)],
            "freshness": {"max_age_s": 3600},
        },
    )


def populate(store: OnlineStore, fs: FeatureSet) -> None:
    rng = random.Random(SEED)
    now = time.time()
    for start in range(0, ENTITIES, 1000):
        rows = [
            (k, now, {n: rng.random() for n in fs.feature_names})
            for k in range(start, start + 1000)
        ]
        store.write(fs.name, fs.version, rows)


def lookup_latency(
    store: OnlineStore, fs: FeatureSet, batch: int, per_thread: int
) -> dict[str, float]:
    samples: list[float] = []
    lock = threading.Lock()
    names = fs.feature_names

    def run(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        for _ in range(per_thread):
            keys = [rng.randrange(ENTITIES) for _ in range(batch)]
            started = time.perf_counter()
            store.read(fs.name, fs.version, keys, names, time.time())
            mine.append(time.perf_counter() - started)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(samples, n=100)
    return {
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
        "lookups_per_s": len(samples) / elapsed,
    }


def write_parquet(path: Path, rows: int, features: int) -> None:
    rng = random.Random(SEED)
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        data: dict[str, Any] = {
            "entity_id": list(range(start, start + n)),
            "event_time": [1.7e9] * n,
        }
        for i in range(features):
            data[f"f{i}"] = [rng.random() for _ in range(n)]
        table = pa.table(data)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def raw_hset(url: str, prefix: str, path: Path, batch_rows: int) -> float:
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    rows = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        data = batch.to_pydict()
        keys, times = data.pop("entity_id"), data.pop("event_time")
        names = list(data)
        pipe = client.pipeline(transaction=False)
        for key, event_time, *values in zip(keys, times, *data.values(), strict=True):
            pipe.hset(
                f"{prefix}{key}",
                mapping={"__ts": event_time, **dict(zip(names, values, strict=True))},
            )
        pipe.execute()
        rows += len(keys)
    seconds = time.perf_counter() - started
    client.close()
    return rows / seconds


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)
    client.close()


def timed(what: str, call: Callable[[], Any]) -> Any:
    console.print(f"[dim]{what}...[/dim]")
    return call()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to materialize")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--lookups", type=int, default=200, help="lookups per thread")
    args = parser.parse_args()
    prefix = f"mpbench:{uuid.uuid4().hex[:8]}:"
    fs50, fs20 = featureset("bench50", 50), featureset("bench20", 20)
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "threads": THREADS,
        "rows": args.rows,
    }
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, OnlineStore] = {
            "sqlite": SqliteOnlineStore(f"sqlite:///{tmp}/online.db"),
            "redis": RedisOnlineStore(args.redis_url, prefix=prefix),
        }
        try:
            lookups: dict[str, Any] = {}
            for name, store in stores.items():
                timed(f"populate {name}", functools.partial(populate, store, fs50))
                for batch in (1, 64):
                    lookups[f"{name}/{batch}"] = timed(
                        f"lookups {name} x{batch}",
                        functools.partial(lookup_latency, store, fs50, batch, args.lookups),
                    )
            results["lookups"] = lookups
            path = Path(tmp) / "rows.parquet"
            timed(f"write {args.rows:,} rows", lambda: write_parquet(path, args.rows, 20))
            report = materialize(stores["redis"], fs20, path, batch_rows=10_000, console=console)
            raw = timed(
                "raw pipelined HSET",
                lambda: raw_hset(args.redis_url, f"{prefix}raw:", path, 10_000),
            )
            results["materialize"] = {
                "rows_per_s": report.rows_per_s,
                "raw_hset_rows_per_s": raw,
                "ratio": report.rows_per_s / raw,
            }
        finally:
            for store in stores.values():
                store.close()
            delete_prefix(args.redis_url, prefix)
    show(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def show(results: dict[str, Any]) -> None:
    table = Table(title=f"lookups of 50 features, {THREADS} threads")
    for column in ("store", "rows", "p50 ms", "p99 ms", "lookups/s"):
        table.add_column(column, justify="right")
    for key, row in results["lookups"].items():
        store, batch = key.split("/")
        table.add_row(
            store,
            batch,
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['lookups_per_s']:,.0f}",
        )
    console.print(table)
    m = results["materialize"]
    summary = Table(title=f"materialize {results['rows']:,} rows x 20 features into Redis")
    for column in ("modelplane rows/s", "raw HSET rows/s", "ratio"):
        summary.add_column(column, justify="right")
    summary.add_row(
        f"{m['rows_per_s']:,.0f}", f"{m['raw_hset_rows_per_s']:,.0f}", f"{m['ratio']:.2f}"
    )
    console.print(summary)


if __name__ == "__main__":
    main()

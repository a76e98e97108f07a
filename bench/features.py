"""Feature store benchmark: lookup latency on SQLite and Redis, materialize throughput.

* p50 / p99 of a 1-row and a 64-row lookup of 50 features, 16 threads at once, against
  10,000 stored entities, on the SQLite and the Redis online store;
  and the same lookups one at a time (what one lookup costs when nothing waits for the GIL);
* the join overhead: p50 / p99 of a prediction over HTTP on loopback at concurrency 16 (and
  1, 1-row requests: the join's own cost with nothing queued behind it), on a
  real gateway (a subprocess per online store) serving two endpoints of one model on 50
  features: ``plain``, whose requests carry the 50 features, and ``joined``, whose requests
  carry only the entity key and join the 50 features from the store. The client is this
  process (aiohttp, 16 callers); the two endpoints are measured in alternating rounds so
  background load hits both alike;
* materializing ``--rows`` rows x 20 features from Parquet into Redis, as rows/s and as a
  ratio to raw pipelined HSET of the same rows, read the same way, in the same run.

    .venv/bin/python bench/features.py [--rows 1000000] [--redis-url redis://127.0.0.1:6379/1]
        [--lookups 200] [--join-requests 100] [--join-rows 1,64] [--skip-join]

Keys live under a fresh prefix that is deleted afterwards. Writes ``bench/results/features.json``
with the load average of the machine before and after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis
from rich.console import Console
from rich.table import Table

from modelplane.dataplane.endpoint_runtime import EndpointConfig, ModelSource
from modelplane.dataplane.gateway import Gateway
from modelplane.dataplane.server import bound_port, uvicorn_server
from modelplane.features.base import OnlineStore
from modelplane.features.materialize import materialize
from modelplane.features.redis import RedisOnlineStore
from modelplane.features.sqlite import SqliteOnlineStore
from modelplane.registry.build import package
from modelplane.spec.contract import Contract
from modelplane.spec.endpoint import Endpoint, FeatureBinding, Route
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.io import parse

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results"
console = Console(width=120)
ENTITIES = 10_000
THREADS = 16
SEED = 5
CALLERS = 16
MODEL = "bench50:1"
SERVER_START_S = 180.0
REQUEST_TIMEOUT_S = 10.0


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


def sequential_latency(
    store: OnlineStore, fs: FeatureSet, batch: int, count: int
) -> dict[str, float]:
    rng = random.Random(SEED)
    samples = []
    for _ in range(count):
        keys = [rng.randrange(ENTITIES) for _ in range(batch)]
        started = time.perf_counter()
        store.read(fs.name, fs.version, keys, fs.feature_names, time.time())
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3, "count": len(samples)}


# ---------------------------------------------------------------------------- join overhead


def build_model(work: Path, fs: FeatureSet) -> ModelSource:
    """A logistic regression on the set's features, each a [-1] float64 input."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(SEED)
    x = rng.random((256, len(fs.feature_names)))
    y = (x[:, 0] + x[:, 1] > 1.0).astype(np.int64)
    sample = {name: x[:8, i] for i, name in enumerate(fs.feature_names)}
    built = package(
        LogisticRegression().fit(x, y), name="bench50", output_dir=work / "pkg", sample_input=sample
    )
    return ModelSource(MODEL, built.path, built.manifest, built.digest)


def endpoint_configs(source: ModelSource, fs: FeatureSet) -> list[EndpointConfig]:
    signature = source.manifest.signature
    configs = []
    for name in ("plain", "joined"):
        contract = Contract(name=name, inputs=signature.inputs, outputs=signature.outputs)
        binding = FeatureBinding(feature_set=fs.ref, entity_key="entity_id", policy="fail")
        endpoint = Endpoint(
            name=name,
            team="bench",
            contract=contract,
            routes=(Route(model=MODEL),),
            timeout_ms=int(REQUEST_TIMEOUT_S * 1000),  # measure latency, never shed
            features=(binding,) if name == "joined" else (),
        )
        configs.append(EndpointConfig(endpoint, {MODEL: source}, {fs.ref: fs}))
    return configs


def serve(store_url: str, prefix: str, port_file: Path) -> None:
    """The server side (a subprocess): the gateway on 127.0.0.1, port written when bound."""
    fs = featureset("bench50", 50)
    store: OnlineStore
    if store_url.startswith("redis"):
        store = RedisOnlineStore(store_url, prefix=prefix)
    else:
        store = SqliteOnlineStore(store_url)
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(endpoint_configs(build_model(Path(tmp), fs), fs), online_store=store)

        def ready(server: Any) -> None:
            staged = port_file.with_suffix(".tmp")
            staged.write_text(str(bound_port(server)), encoding="utf-8")
            staged.rename(port_file)  # the parent never reads a half-written port

        server = uvicorn_server(gateway, "127.0.0.1", 0, on_ready=ready, freeze_gc=True)
        try:
            server.run()
        finally:
            store.close()


def start_server(store_url: str, prefix: str, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = work / f"port-{uuid.uuid4().hex[:6]}"
    log = (work / f"{port_file.name}.log").open("wb")
    command = [sys.executable, __file__, "--serve", store_url, "--prefix", prefix,
               "--port-file", str(port_file)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if port_file.exists():
            return proc, int(port_file.read_text(encoding="utf-8"))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop_server(proc)
    tail = (work / f"{port_file.name}.log").read_text(encoding="utf-8", errors="replace")[-2000:]
    raise RuntimeError(f"the gateway for {store_url} did not start:\n{tail}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def request_bodies(fs: FeatureSet, rows: int, count: int) -> dict[str, list[bytes]]:
    """V2 JSON bodies: ``plain`` carries the features, ``joined`` only the entity keys."""
    rng = random.Random(SEED)
    encode = msgspec.json.encode
    bodies: dict[str, list[bytes]] = {"plain": [], "joined": []}
    for _ in range(count):
        keys = [rng.randrange(ENTITIES) for _ in range(rows)]
        key_input = {"name": "entity_id", "datatype": "INT64", "shape": [rows], "data": keys}
        bodies["joined"].append(encode({"inputs": [key_input]}))
        features = [
            {"name": n, "datatype": "FP64", "shape": [rows], "data": [rng.random()] * rows}
            for n in fs.feature_names
        ]
        bodies["plain"].append(encode({"inputs": features}))
    return bodies


async def load(
    port: int, endpoint: str, bodies: Sequence[bytes], per_caller: int, callers: int = CALLERS
) -> tuple[list[float], list[str]]:
    """``callers`` callers, each sending ``per_caller`` requests back to back: the latency
    of each answered request, and what each failed one answered."""
    url = f"http://127.0.0.1:{port}/v2/models/{endpoint}/infer"
    headers = {"content-type": "application/json"}
    samples: list[float] = []
    errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=callers)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def caller(index: int) -> None:
            for i in range(per_caller):
                body = bodies[(index * per_caller + i) % len(bodies)]
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                if response.status == 200:
                    samples.append(time.perf_counter() - started)
                else:
                    errors.append(f"{response.status}: {answer[:200]!r}")

        budget = REQUEST_TIMEOUT_S * per_caller
        await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(callers))), budget)
    return samples, errors


def join_overhead(
    store_url: str,
    prefix: str,
    work: Path,
    rows_list: Sequence[int],
    per_caller: int,
    callers: int = CALLERS,
) -> dict[str, Any]:
    fs = featureset("bench50", 50)
    proc, port = start_server(store_url, prefix, work)
    results: dict[str, Any] = {}
    try:
        for rows in rows_list:
            bodies = request_bodies(fs, rows, 512)
            for endpoint in ("plain", "joined"):  # warm-up: connections, caches, allocator
                warm = max(10, per_caller // 4)
                asyncio.run(load(port, endpoint, bodies[endpoint], warm, callers))
            samples: dict[str, list[float]] = {"plain": [], "joined": []}
            errors: dict[str, list[str]] = {"plain": [], "joined": []}
            elapsed = dict.fromkeys(samples, 0.0)
            for _ in range(3):  # alternating rounds: drifting background load hits both
                for endpoint in samples:
                    started = time.perf_counter()
                    got, failed = asyncio.run(
                        load(port, endpoint, bodies[endpoint], per_caller, callers)
                    )
                    elapsed[endpoint] += time.perf_counter() - started
                    samples[endpoint] += got
                    errors[endpoint] += failed
            one: dict[str, Any] = {}
            for endpoint, got in samples.items():
                one[endpoint] = {
                    **percentiles(got),
                    "requests_per_s": len(got) / elapsed[endpoint],
                    "errors": len(errors[endpoint]),
                    "first_error": errors[endpoint][0] if errors[endpoint] else None,
                }
            one["overhead_p50_ms"] = one["joined"]["p50_ms"] - one["plain"]["p50_ms"]
            one["overhead_p99_ms"] = one["joined"]["p99_ms"] - one["plain"]["p99_ms"]
            results[str(rows)] = one
    finally:
        stop_server(proc)
    return results


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
    args = parse_args()
    if args.serve:
        serve(args.serve, args.prefix, Path(args.port_file))
        return
    prefix = f"mpbench:{uuid.uuid4().hex[:8]}:"
    fs50, fs20 = featureset("bench50", 50), featureset("bench20", 20)
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
        "threads": THREADS,
        "rows": args.rows,
    }
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, OnlineStore] = {
            "sqlite": SqliteOnlineStore(f"sqlite:///{tmp}/online.db"),
            "redis": RedisOnlineStore(args.redis_url, prefix=prefix),
        }
        urls = {"sqlite": f"sqlite:///{tmp}/online.db", "redis": args.redis_url}
        try:
            lookups: dict[str, Any] = {}
            sequential: dict[str, Any] = {}
            for name, store in stores.items():
                timed(f"populate {name}", functools.partial(populate, store, fs50))
                for batch in (1, 64):
                    lookups[f"{name}/{batch}"] = timed(
                        f"lookups {name} x{batch}",
                        functools.partial(lookup_latency, store, fs50, batch, args.lookups),
                    )
                    sequential[f"{name}/{batch}"] = sequential_latency(
                        store, fs50, batch, args.lookups * 5
                    )
            results["lookups"] = lookups
            results["lookups_sequential"] = sequential
            if not args.skip_join:
                rows_list = [int(r) for r in args.join_rows.split(",")]
                join: dict[str, Any] = {}
                for name in stores:
                    run = functools.partial(
                        join_overhead, urls[name], prefix, Path(tmp), rows_list, args.join_requests
                    )
                    join[name] = timed(f"join overhead over HTTP, {name}", run)
                results["join"] = join
                # one caller: what the join adds to a request when nothing queues behind it
                alone: dict[str, Any] = {}
                for name in stores:
                    run = functools.partial(join_overhead, urls[name], prefix, Path(tmp), [1],
                                            args.join_requests * 4, callers=1)  # fmt: skip
                    alone[name] = timed(f"join overhead over HTTP, {name}, one caller", run)
                results["join_one_caller"] = alone
            results["materialize"] = materialize_ratio(args, stores["redis"], fs20, prefix, tmp)
        finally:
            for store in stores.values():
                store.close()
            delete_prefix(args.redis_url, prefix)
    results["load_avg_after"] = os.getloadavg()
    results["aims"] = aims(results)
    show(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "features.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to materialize")
    # db 1: the test suite flushes db 0 around each Redis test, which would empty a run's keys
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--lookups", type=int, default=200, help="lookups per thread")
    parser.add_argument(
        "--join-requests", type=int, default=100, help="requests per caller per round (3 rounds)"
    )
    parser.add_argument("--join-rows", default="1,64", help="rows per request, comma-separated")
    parser.add_argument("--skip-join", action="store_true", help="no HTTP join measurement")
    # the server side of the join measurement, started by this script itself
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def materialize_ratio(
    args: argparse.Namespace, store: OnlineStore, fs: FeatureSet, prefix: str, tmp: str
) -> dict[str, float]:
    path = Path(tmp) / "rows.parquet"
    timed(f"write {args.rows:,} rows", lambda: write_parquet(path, args.rows, 20))
    started = time.perf_counter()
    report = materialize(store, fs, path, batch_rows=10_000, console=console)
    seconds = time.perf_counter() - started
    raw = timed(
        "raw pipelined HSET", lambda: raw_hset(args.redis_url, f"{prefix}raw:", path, 10_000)
    )
    return {
        "rows_per_s": report.rows_per_s,
        "raw_hset_rows_per_s": raw,
        "ratio": report.rows_per_s / raw,
        "seconds": seconds,
    }


def aims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's aims, each with the measured value."""
    checks = [
        ("redis 1-row p99, 16 threads", results["lookups"]["redis/1"]["p99_ms"], 2.0),
        ("redis 1-row p99, one at a time", results["lookups_sequential"]["redis/1"]["p99_ms"], 2.0),
    ]
    for store, by_rows in results.get("join", {}).items():
        for rows, one in by_rows.items():
            checks.append(
                (f"join overhead p50, {store}, {rows} row(s)", one["overhead_p50_ms"], 1.0)
            )
    for store, by_rows in results.get("join_one_caller", {}).items():
        for rows, one in by_rows.items():
            what = f"join overhead p50, {store}, {rows} row(s), one caller"
            checks.append((what, one["overhead_p50_ms"], 1.0))
    out = [{"aim": aim, "value": value, "limit": limit, "met": value <= limit}
           for aim, value, limit in checks]  # fmt: skip
    ratio = results["materialize"]["ratio"]
    out.append({"aim": "materialize / raw HSET", "value": ratio, "limit": 0.5, "met": ratio >= 0.5})
    return out


def show(results: dict[str, Any]) -> None:
    table = Table(title=f"lookups of 50 features: {THREADS} threads | one at a time")
    for column in ("store", "rows", "p50 ms", "p99 ms", "lookups/s", "alone p50", "alone p99"):
        table.add_column(column, justify="right")
    for key, row in results["lookups"].items():
        store, batch = key.split("/")
        alone = results["lookups_sequential"][key]
        table.add_row(
            store,
            batch,
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['lookups_per_s']:,.0f}",
            f"{alone['p50_ms']:.2f}",
            f"{alone['p99_ms']:.2f}",
        )
    console.print(table)
    if "join" in results:
        show_join(results["join"], CALLERS)
    if "join_one_caller" in results:
        show_join(results["join_one_caller"], 1)
    m = results["materialize"]
    summary = Table(title=f"materialize {results['rows']:,} rows x 20 features into Redis")
    for column in ("modelplane rows/s", "raw HSET rows/s", "ratio", "seconds"):
        summary.add_column(column, justify="right")
    summary.add_row(
        f"{m['rows_per_s']:,.0f}",
        f"{m['raw_hset_rows_per_s']:,.0f}",
        f"{m['ratio']:.2f}",
        f"{m['seconds']:.0f}",
    )
    console.print(summary)
    checks = Table(title="issue 5 aims")
    for column in ("aim", "value", "limit", "met"):
        checks.add_column(column, justify="right")
    for check in results["aims"]:
        mark = "[green]yes[/green]" if check["met"] else "[red]no[/red]"
        checks.add_row(check["aim"], f"{check['value']:.2f}", f"{check['limit']:g}", mark)
    console.print(checks)
    before, after = results["load_avg_before"], results["load_avg_after"]
    console.print(f"load average: {before[0]:.2f} before, {after[0]:.2f} after")


def show_join(join: dict[str, Any], callers: int) -> None:
    table = Table(
        title=f"prediction over HTTP, {callers} caller(s): features in the request | joined"
    )
    columns = ("store", "rows", "plain p50", "plain p99", "joined p50", "joined p99",
               "+p50 ms", "+p99 ms", "req/s joined/plain", "errors")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for store, by_rows in join.items():
        for rows, one in by_rows.items():
            plain, joined = one["plain"], one["joined"]
            table.add_row(
                store,
                rows,
                f"{plain['p50_ms']:.2f}",
                f"{plain['p99_ms']:.2f}",
                f"{joined['p50_ms']:.2f}",
                f"{joined['p99_ms']:.2f}",
                f"{one['overhead_p50_ms']:+.2f}",
                f"{one['overhead_p99_ms']:+.2f}",
                f"{joined['requests_per_s'] / plain['requests_per_s']:.2f}",
                f"{plain['errors']}/{joined['errors']}",
            )
    console.print(table)


if __name__ == "__main__":
    main()

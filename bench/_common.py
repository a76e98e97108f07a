"""Pieces several benches share: the one-model endpoint they serve, the closed-loop load
client they drive it with, and the summary of its runs.

The load client runs as a process of its own (`python bench/_common.py --client URL`) so
that its CPU is not the gateway's: a bench in the same process would measure both at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the load client and echo workers import this file: keep them light
    from rich.table import Table

FEATURES = 16
"""Inputs of the logistic regression `lr_endpoint` serves and `load` sends."""


def lr_endpoint(work: Path) -> Any:
    """An `EndpointConfig` serving one packaged sklearn logistic regression (ONNX) as `lr`."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from modelplane.dataplane.endpoint_runtime import EndpointConfig, ModelSource
    from modelplane.registry.build import package
    from modelplane.spec.contract import Contract
    from modelplane.spec.endpoint import Endpoint, Route

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    onx = to_onnx(LogisticRegression().fit(x, y), x[:1], options={"zipmap": False})
    built = package(onx, name="lr", output_dir=work / "lr", sample_input=x[:4])
    source = ModelSource("lr:1", built.path, built.manifest, built.digest)
    signature = built.manifest.signature
    contract = Contract(name="lr", inputs=signature.inputs, outputs=signature.outputs)
    endpoint = Endpoint(name="lr", team="bench", contract=contract, routes=(Route(model="lr:1"),))
    return EndpointConfig(endpoint, {"lr:1": source})


def load_client(
    url: str, concurrency: int, duration_s: float, token: str | None = None
) -> dict[str, Any]:
    """Run the load client process: closed loop, one row per request (V2 JSON); its
    latencies (ms), errors and elapsed seconds."""
    args = [sys.executable, __file__, "--client", url, "--concurrency", str(concurrency)]
    args += ["--duration", str(duration_s)] + (["--token", token] if token else [])
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load client failed: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def load(
    url: str, concurrency: int, duration_s: float, token: str | None = None
) -> dict[str, Any]:
    """`concurrency` callers posting one row each, back to back, for `duration_s`."""
    import aiohttp

    x = np.random.default_rng(1).normal(size=FEATURES)
    tensor = {"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
              "data": [round(float(v), 5) for v in x]}  # fmt: skip
    body = json.dumps({"inputs": [tensor]}).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    began = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"latencies_ms": latencies, "errors": errors, "elapsed_s": time.monotonic() - began}


def latency_summary(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Requests per second, p50 and p99 (ms), errors and requests over `load` runs."""
    latencies = np.concatenate([np.asarray(r["latencies_ms"]) for r in runs])
    return {
        "rps": sum(len(r["latencies_ms"]) for r in runs) / sum(r["elapsed_s"] for r in runs),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "errors": sum(int(r["errors"]) for r in runs),
        "requests": len(latencies),
    }


def prediction_log_run(
    configs: Sequence[Any], home: Path, log_config: Any, run_s: float, concurrency: int
) -> tuple[dict[str, Any], Any]:
    """Load endpoint `plain` of `configs` for `run_s` (after a 1 s warm-up) with a
    `PredictionLog(log_config)` on SQLite under `home` as the gateway's sink; the run and
    the sink, read after its flusher has had time to write its last batches."""
    from modelplane.dataplane.gateway import GatewayConfig
    from modelplane.dataplane.server import ServerThread
    from modelplane.observe.predlog import PredictionLog
    from modelplane.store.db import open_engine

    engine = open_engine(f"sqlite:///{home / 'state.db'}")
    sink = PredictionLog(engine, log_config, seed=3)
    server = ServerThread([c for c in configs if c.endpoint.name == "plain"],
                          config=GatewayConfig(seed=7))  # fmt: skip
    server.gateway.sink = sink
    try:
        with server:
            url = f"{server.url}/v2/models/plain/infer"
            load_client(url, concurrency, 1.0)  # warm-up
            run = load_client(url, concurrency, run_s)
            time.sleep(1.0)  # the flusher's last batches, before the counts are read
    finally:
        engine.dispose()
    return run, sink


def paired_on_off(
    folder: Path,
    repeats: int,
    run_one: Callable[[Path, bool], dict[str, Any]],
    log: Callable[[str], None],
    alternate: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` pairs of runs, "off" then "on" (each in a fresh home under ``folder``), so
    that drift in the machine's load hits both alike; with ``alternate`` the order flips every
    repeat, for when a run's leftovers (workers going away) slow the next one."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for repeat in range(repeats):
        order = ["on", "off"] if alternate and repeat % 2 else ["off", "on"]
        for name in order:
            home = folder / f"{name}-{repeat}"
            home.mkdir()
            runs[name].append(run_one(home, name == "on"))
        log(f"repeat {repeat + 1}/{repeats}")
    return runs


def on_off_table(
    title: str, runs: dict[str, list[dict[str, Any]]], columns: tuple[str, str] = ("off", "on")
) -> tuple[dict[str, dict[str, float]], dict[str, float], Table]:
    """The latency summary of each side, on over off, and a table of both with their ratio
    (p50, p99, req/s) for the caller to add its own rows to."""
    from rich.table import Table

    summary = {name: latency_summary(done) for name, done in runs.items()}
    ratio = {k: summary["on"][k] / summary["off"][k] for k in ("p50_ms", "p99_ms", "rps")}
    table = Table(title=title)
    table.add_column("measure")
    for column in (*columns, "on / off"):
        table.add_column(column, justify="right")
    for key, label in (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("rps", "req/s")):
        table.add_row(
            label, f"{summary['off'][key]:.2f}", f"{summary['on'][key]:.2f}", f"{ratio[key]:.3f}"
        )
    return summary, ratio, table


class Echo:
    """A model that answers its inputs: the serving path alone, with no model cost in it."""

    supports_batching = True

    def predict(self, inputs: Any) -> dict[str, Any]:
        return dict(inputs)


def echo_model() -> Echo:
    return Echo()


# workers import this file by name from its folder, however the benchmark was started
ECHO_LOADER = f"{Path(__file__).stem}:echo_model"
ECHO_PATHS = (str(Path(__file__).resolve().parent),)
"""The `paths` a worker spec needs to find `ECHO_LOADER`."""


def _main() -> None:
    parser = argparse.ArgumentParser(description="the benches' load client process")
    parser.add_argument("--client", required=True, help="the V2 infer URL")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--token")
    args = parser.parse_args()
    result = asyncio.run(load(args.client, args.concurrency, args.duration, args.token))
    print(json.dumps(result))


if __name__ == "__main__":
    _main()

"""What security costs: token checks on the gateway, and the control API's body limit.

Sections (each a key of ``bench/results/security.json``; later sections may be added):

1. ``gateway_auth``: one gateway (``ServerThread``) serving an ONNX logistic regression,
   loaded by a closed-loop client process at ``--concurrency`` (64) with one row per request
   (V2 JSON), with token checks on and off. The same gateway and workers serve both: the
   check is switched between runs, which alternate so drift in the machine's load hits
   both alike. Aim: throughput with checks within 3 % of without.
2. ``auth_check``: the cost of one cached check (``CachedAuthenticator.authenticate`` then
   ``authorize``) in process, without HTTP: what the ratio above is made of.
3. ``control_api_body``: a 300 MB body streamed (no ``Content-Length``) to the control API,
   limited at 16 MB: the answer, and how much the server process's peak memory grew.

Run from the repository root:

    .venv/bin/python bench/security.py            # ~1 minute
    .venv/bin/python bench/security.py --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

# run as a script, only bench/ is on sys.path; bench._common lives under the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import latency_summary, load_client, lr_endpoint

RESULTS = Path(__file__).parent / "results" / "security.json"


@dataclass(frozen=True)
class Mode:
    warmup_s: float
    run_s: float
    repeats: int
    concurrency: int
    body_mb: int


FULL = Mode(warmup_s=2.0, run_s=3.0, repeats=8, concurrency=64, body_mb=300)
QUICK = Mode(warmup_s=1.0, run_s=2.0, repeats=3, concurrency=64, body_mb=100)


# ---------------------------------------------------------------- gateway_auth


def bench_gateway_auth(mode: Mode, console: Console) -> dict[str, Any]:
    from modelplane.dataplane.gateway import GatewayConfig
    from modelplane.dataplane.server import ServerThread
    from modelplane.security.auth import CachedAuthenticator, PredictGate
    from modelplane.security.tokens import TokenStore
    from modelplane.store.db import open_engine

    with tempfile.TemporaryDirectory(prefix="modelplane-security-bench-") as tmp:
        work = Path(tmp)
        engine = open_engine(f"sqlite:///{work}/state.db")
        store = TokenStore(engine)
        token = store.create(subject="bench", team="bench", scopes=["predict"], actor="bench")
        gate = PredictGate(CachedAuthenticator(store.verify))
        with ServerThread([lr_endpoint(work)], config=GatewayConfig(seed=7)) as server:
            url = f"{server.url}/v2/models/lr/infer"
            gateway = server.gateway
            settings = {"off": (None, None), "on": (gate, token.token)}
            for auth, bearer in settings.values():
                gateway.auth = auth
                load_client(url, mode.concurrency, mode.warmup_s, bearer)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
            for repeat in range(mode.repeats):
                # pairs, in turn order: off-on, on-off, ... so neither always goes first
                order = list(settings) if repeat % 2 == 0 else list(reversed(settings))
                for name in order:
                    auth, bearer = settings[name]
                    gateway.auth = auth
                    # The gateway's event loop runs in this process (the client and the
                    # model workers do not): its CPU time per request is what a check adds
                    # to, and is far less sensitive than req/s to a busy shared machine.
                    cpu = time.process_time()
                    run = load_client(url, mode.concurrency, mode.run_s, bearer)
                    run["gateway_cpu_s"] = time.process_time() - cpu
                    runs[name].append(run)
                console.log(f"gateway_auth pair {repeat + 1}/{mode.repeats}")
        engine.dispose()
    point: dict[str, Any] = {name: latency_summary(r) for name, r in runs.items()}
    point["ratio"] = {k: point["on"][k] / point["off"][k] for k in ("rps", "p50_ms", "p99_ms")}
    per_run = {name: [latency_summary([one])["rps"] for one in r] for name, r in runs.items()}
    point["per_run_rps"] = per_run
    # the machine is shared: a pair's ratio cancels what drifts slower than a pair
    pairs = [on / off for on, off in zip(per_run["on"], per_run["off"], strict=True)]
    point["paired_rps_ratio"] = {"median": float(np.median(pairs)), "each": pairs}
    cpu_us = {
        name: [r["gateway_cpu_s"] / max(1, len(r["latencies_ms"])) * 1e6 for r in rs]
        for name, rs in runs.items()
    }
    point["gateway_cpu_us_per_request"] = {
        "off": float(np.median(cpu_us["off"])),
        "on": float(np.median(cpu_us["on"])),
        "each": cpu_us,
    }
    return {
        "concurrency": mode.concurrency,
        "run_s": mode.run_s,
        "repeats": mode.repeats,
        "aim": "throughput with checks on within 3% of off",
        **point,
    }


# ---------------------------------------------------------------- auth_check


def bench_auth_check(calls: int = 200_000) -> dict[str, Any]:
    """The gateway's hot path (``PredictGate.allowed``, a remembered grant), and a full
    check (authenticate from the token cache, then the rule) for comparison."""
    from modelplane.security.auth import CachedAuthenticator, PredictGate
    from modelplane.security.scopes import Principal, Scope

    principal = Principal("bench", "bench", frozenset({Scope.PREDICT}), frozenset({"lr"}))
    authenticator = CachedAuthenticator(lambda token: principal, ttl_s=3600.0)
    gate = PredictGate(authenticator, ttl_s=3600.0)
    header = "Bearer mp_0123456789abcdef_" + "s" * 43

    async def loop() -> tuple[float, float]:
        await gate.check(header, "lr", "bench")  # fills both caches
        began = time.perf_counter()
        for _ in range(calls):
            if not gate.allowed(header, "lr", "bench"):
                raise AssertionError("the grant was not remembered")
        fast = time.perf_counter() - began
        began = time.perf_counter()
        for _ in range(calls):
            await gate.check(header, "lr", "bench")
        return fast, time.perf_counter() - began

    fast, full = asyncio.run(loop())
    return {
        "calls": calls,
        "us_per_check": fast / calls * 1e6,
        "us_per_full_check": full / calls * 1e6,
    }


# ---------------------------------------------------------------- control_api_body


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_control_api_body(mode: Mode) -> dict[str, Any]:
    """The server runs in this process (a thread), so this process's peak is its peak; the
    client streams from another process, so its buffers are not counted."""
    import uvicorn

    from modelplane.controlplane.api import create_api
    from modelplane.controlplane.limits import ApiLimits
    from modelplane.registry.service import open_registry

    with tempfile.TemporaryDirectory(prefix="modelplane-security-bench-") as tmp:
        registry = open_registry(f"sqlite:///{tmp}/state.db", f"{tmp}/art", actor="bench")
        limits = ApiLimits()
        app = create_api(registry, limits=limits)
        port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _rss_mb()
        args = [sys.executable, __file__, "--send-body", f"http://127.0.0.1:{port}/v1/apply"]
        args += ["--body-mb", str(mode.body_mb)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        answer = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr}
        peak = _peak_rss_mb()
        server.should_exit = True
        thread.join(timeout=10)
        registry.close()
    return {
        "body_mb": mode.body_mb,
        "limit_mb": limits.max_body_bytes / 2**20,
        "answer": answer,
        "server_rss_before_mb": round(before, 1),
        "server_peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - before, 1),
    }


def _send_body(url: str, body_mb: int) -> dict[str, Any]:
    import httpx

    def chunks() -> Iterator[bytes]:
        yield b'{"documents": [{"kind": "Policy", "name": "'
        block = b"x" * 2**20
        for _ in range(body_mb):
            yield block
        yield b'"}]}'

    began = time.perf_counter()
    try:
        with httpx.Client(timeout=60) as http:
            response = http.post(url, content=chunks())
        outcome = {"status": response.status_code, "code": response.json()["error"]["code"]}
    except httpx.TransportError as exc:  # the server may close before all is sent
        outcome = {"status": None, "code": f"connection closed: {type(exc).__name__}"}
    return {**outcome, "seconds": round(time.perf_counter() - began, 3)}


# ---------------------------------------------------------------- report


def _table(results: dict[str, Any]) -> Table:
    table = Table(title="security: what the checks cost")
    for column in ("measure", "off", "on", "on / off"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    gateway = results["gateway_auth"]
    off, on, ratio = gateway["off"], gateway["on"], gateway["ratio"]
    c = gateway["concurrency"]
    table.add_row(f"gateway req/s, c={c}", f"{off['rps']:.0f}", f"{on['rps']:.0f}",
                  f"{ratio['rps']:.3f}")  # fmt: skip
    for key in ("p50_ms", "p99_ms"):
        table.add_row(f"gateway {key}, c={c}", f"{off[key]:.2f}", f"{on[key]:.2f}",
                      f"{ratio[key]:.3f}")  # fmt: skip
    paired = gateway["paired_rps_ratio"]["median"]
    table.add_row("req/s ratio, median of pairs", "", "", f"{paired:.3f}")
    cpu = gateway["gateway_cpu_us_per_request"]
    table.add_row("gateway CPU us / request (median)", f"{cpu['off']:.0f}", f"{cpu['on']:.0f}",
                  f"{cpu['on'] / cpu['off']:.3f}")  # fmt: skip
    table.add_row("errors", str(off["errors"]), str(on["errors"]), "")
    check = results["auth_check"]
    table.add_row("gateway check, remembered grant (us)", "", f"{check['us_per_check']:.2f}", "")
    table.add_row("full check from the token cache (us)", "", f"{check['us_per_full_check']:.2f}",
                  "")  # fmt: skip
    body = results["control_api_body"]
    answer = body["answer"]
    table.add_row(
        f"control API, {body['body_mb']} MB body (limit {body['limit_mb']:.0f} MB)",
        "", f"{answer.get('status')} {answer.get('code')}", "",
    )  # fmt: skip
    table.add_row("  server peak memory growth (MB)", "", f"{body['growth_mb']:.1f}", "")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--send-body", help=argparse.SUPPRESS)
    parser.add_argument("--body-mb", type=int, default=300, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send_body:
        print(json.dumps(_send_body(args.send_body, args.body_mb)))
        return
    mode = QUICK if args.quick else FULL
    console = Console()
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full"}
    if RESULTS.exists():  # keep sections other benches or runs wrote
        results = {**json.loads(RESULTS.read_text()), **results}
    results["gateway_auth"] = bench_gateway_auth(mode, console)
    results["auth_check"] = bench_auth_check()
    results["control_api_body"] = bench_control_api_body(mode)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10, check=False)
    results["machine"] = {"uptime": uptime.stdout.strip(), "cpus": _cpus()}
    console.print(_table(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()

"""The gateway end to end on each execution backend (issue 13: Ray at least 0.7x the gateway's
own workers at c=64).

One endpoint, ``lr`` (the packaged scikit-learn logistic regression of ``bench/_common.py``,
16 float inputs, 2 replicas), served by a real gateway (``ServerThread``, uvicorn on
127.0.0.1) three ways, all up at once for the whole run:

- ``local workers``: the gateway's own worker processes (``GatewayConfig(pools=None)``, the
  default of ``modelplane up``);
- ``local backend``: a ``BackendFleet`` over ``backends.local`` (a spawned process a replica,
  a loopback socket);
- ``ray``: a ``BackendFleet`` over ``backends.ray`` on a real one-node Ray cluster on this
  machine (token authentication, no dashboard), an actor a replica, batches over its socket.

A load client process of its own (``python bench/gateway_backends.py --client URL ...``, so
its CPU is not the gateway's) keeps ``c`` keep-alive connections busy, one row per request,
closed loop, for ``--seconds`` after ``--warmup`` seconds it does not count, in two formats:
records JSON on ``/v1/endpoints/lr:predict`` and Open Inference Protocol v2 with the binary
tensor extension on ``/v2/models/lr/infer``. Each cell (format, c) runs the three gateways
back to back, their order rotating every round, so a neighbour's load on a shared machine
falls on all alike. The Ray cluster runs through every cell, so its background work falls on
all three as well. Ratios are req/s against ``local workers`` over all rounds, with the
lowest of the rounds' own ratios beside it. Beside req/s: CPU milliseconds per request of the
gateway's event loop thread and its replicas' processes, which a busy neighbour moves less
(the Ray cluster's own processes are not in it).

Prints a table and writes ``bench/results/gateway_backends.json``.

Run from the repository root:

    .venv/bin/python bench/gateway_backends.py                    # 3 rounds, 5 s a cell (~7 min)
    .venv/bin/python bench/gateway_backends.py --rounds 1 --seconds 2 --concurrency 1,64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "gateway_backends.json"
CONFIGS = ("local workers", "local backend", "ray")
BASE = "local workers"
AIM = 0.7
"""Ray's req/s over the gateway's own workers at c=64 (issue 13)."""
AIM_C = 64


# ---------------------------------------------------------------- the load client process


async def _load(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, warmup_s: float,
    seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """``concurrency`` callers posting ``body`` back to back; only answers that start after
    the warm-up count."""
    import aiohttp

    latencies: list[float] = []
    errors = sent = 0
    loop = asyncio.get_running_loop()
    counting_from = loop.time() + warmup_s
    end = counting_from + seconds

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal errors, sent
        while loop.time() < end:
            started = loop.time()
            sent += 1
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if started < counting_from:
                continue
            if ok:
                latencies.append((loop.time() - started) * 1000)
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(caller(session) for _ in range(concurrency)))
    # requests in flight at the end finish late: the window is the measured seconds plus them
    elapsed = loop.time() - counting_from
    return {"latencies_ms": latencies, "errors": errors, "elapsed_s": elapsed, "sent": sent}


def _client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="this bench's load client process")
    parser.add_argument("--client", required=True, help="the URL to post to")
    parser.add_argument("--request", required=True, help="JSON: body (base64) and headers")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    request = json.loads(Path(args.request).read_text())
    body = base64.b64decode(request["body"])
    result = asyncio.run(
        _load(args.client, body, request["headers"], args.concurrency, args.warmup, args.seconds)
    )
    print(json.dumps(result))


def run_client(
    url: str, request: Path, concurrency: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    args = [sys.executable, __file__, "--client", url, "--request", str(request),
            "--concurrency", str(concurrency), "--warmup", str(warmup_s),
            "--seconds", str(seconds)]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=warmup_s + seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---------------------------------------------------------------- the gateways


def requests_for(work: Path) -> dict[str, tuple[str, Path]]:
    """Each format's path and request file (body and headers) for the load client."""
    import numpy as np

    from bench._common import FEATURES
    from modelplane.dataplane.codec_v2 import HEADER_LENGTH, encode_request

    row = np.random.default_rng(1).normal(size=FEATURES).astype(np.float32)
    records = json.dumps({"instances": [{"input": [round(float(v), 5) for v in row]}]})
    v2 = encode_request({"input": row.reshape(1, FEATURES)}, binary=True,
                        parameters={"binary_data_output": True})  # fmt: skip
    assert v2.header_length is not None
    formats = {
        "records": ("/v1/endpoints/lr:predict", records.encode(),
                    {"content-type": "application/json"}),
        "v2 binary": ("/v2/models/lr/infer", v2.body,
                      {"content-type": v2.content_type, HEADER_LENGTH: str(v2.header_length)}),
    }  # fmt: skip
    out: dict[str, tuple[str, Path]] = {}
    for index, (name, (path, body, headers)) in enumerate(formats.items()):
        file = work / f"request-{index}.json"
        file.write_text(json.dumps({"body": base64.b64encode(body).decode(), "headers": headers}))
        out[name] = (path, file)
    return out


@contextmanager
def gateways(config: Any) -> Iterator[dict[str, Any]]:
    """The three gateways serving ``config``, each with its replicas ready."""
    from tests.kit.ray_cluster import NodeShape, ray_test_cluster

    from modelplane.backends.local import LocalBackend
    from modelplane.backends.ray import RayBackend
    from modelplane.core.backend import BackendNode
    from modelplane.dataplane.gateway import GatewayConfig
    from modelplane.dataplane.server import ServerThread
    from modelplane.spec.policy import Policy
    from modelplane.system.backend_pool import BackendFleet

    with ExitStack() as stack:
        # as tests/kit/backends.py builds each; the cluster first, so that ray.init is done
        stack.enter_context(ray_test_cluster(NodeShape("head", 16, memory_gib=16)))
        local = LocalBackend(BackendNode("box", cpu_milli=64_000, memory_mib=64 * 1024))
        pools = {
            "local workers": None,
            "local backend": BackendFleet(local, Policy, start_timeout_s=60).pool,
            "ray": BackendFleet(RayBackend(), Policy, start_timeout_s=90).pool,
        }
        servers = {}
        for name in CONFIGS:
            server = ServerThread([config], config=GatewayConfig(seed=7, pools=pools[name]))
            servers[name] = stack.enter_context(server)
        yield servers


def ready_replicas(server: Any) -> list[tuple[str | None, int | None]]:
    runtime = server.gateway.handler.endpoints["lr"]
    return [
        (r.node, r.pid)
        for route in runtime.routes
        for r in route.target.pool.replicas()
        if r.state.value == "ready"
    ]


def _cpu_ticks(stat: str) -> int:
    # utime and stime: fields 14 and 15 of /proc/.../stat, after the command in parentheses
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(server: Any) -> float:
    """CPU time so far of the gateway's event loop thread and of its ready replicas'
    processes (workers, backend children or Ray actors): what serving costs, which a busy
    neighbour moves less than it moves req/s."""
    # every gateway runs in this process: its own thread is what it spends
    ticks = _cpu_ticks(f"/proc/self/task/{server._thread.native_id}/stat")
    for _, pid in ready_replicas(server):
        if pid is not None:
            ticks += _cpu_ticks(f"/proc/{pid}/stat")
    return ticks / os.sysconf("SC_CLK_TCK")


def check_answers(servers: dict[str, Any], formats: dict[str, tuple[str, Path]]) -> None:
    """Every gateway answers every format with 200 and the same prediction."""
    import httpx

    for fmt, (path, file) in formats.items():
        request = json.loads(file.read_text())
        body = base64.b64decode(request["body"])
        answers = {}
        for name, server in servers.items():
            with httpx.Client(base_url=server.url, timeout=30) as http:
                answer = http.post(path, content=body, headers=request["headers"])
            if answer.status_code != 200:
                raise RuntimeError(f"{name} {fmt}: {answer.status_code} {answer.text[:300]}")
            if fmt == "records":  # the binary answer differs only in its request id
                answers[name] = json.dumps(answer.json()["predictions"])
        if len(set(answers.values())) > 1:
            raise RuntimeError(f"the gateways disagree: {answers}")


# ---------------------------------------------------------------- the run


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    latencies = np.concatenate([np.asarray(r["latencies_ms"], dtype=float) for r in runs])
    requests = int(latencies.size)
    return {
        "rps": requests / sum(r["elapsed_s"] for r in runs),
        "p50_ms": float(np.percentile(latencies, 50)) if requests else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) if requests else float("nan"),
        "errors": sum(int(r["errors"]) for r in runs),
        "requests": requests,
        # over every request sent, the warm-up's too, as the CPU time covers them
        "cpu_ms_per_request": 1000 * sum(r["cpu_s"] for r in runs) / sum(r["sent"] for r in runs),
        "rps_by_round": [len(r["latencies_ms"]) / r["elapsed_s"] for r in runs],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the gateway end to end on each backend")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="not counted, per cell")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--formats", default="records,v2 binary")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    wanted_formats = [f.strip() for f in args.formats.split(",")]
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or min(concurrencies) < 1:
        parser.error("--rounds, --seconds and --concurrency must be positive")

    from rich.console import Console
    from rich.table import Table

    from bench._common import lr_endpoint

    console = Console(width=120)  # the table whole, in a log as in a terminal
    runs: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    with tempfile.TemporaryDirectory(prefix="mp-bench-gwb-") as tmp:
        work = Path(tmp)
        plan = lr_endpoint(work)
        config = type(plan)(plan.endpoint.model_copy(update={"replicas": 2}), plan.models)
        all_formats = requests_for(work)
        unknown = set(wanted_formats) - set(all_formats)
        if unknown:
            parser.error(f"--formats: unknown {sorted(unknown)}; known: {sorted(all_formats)}")
        formats = {f: all_formats[f] for f in wanted_formats}
        started = time.monotonic()
        with gateways(config) as servers:
            console.print(f"gateways up in {time.monotonic() - started:.1f} s")
            for name, server in servers.items():
                console.print(f"  {name}: {server.url}, ready replicas {ready_replicas(server)}")
            check_answers(servers, formats)
            for round_ in range(args.rounds):
                order = CONFIGS[round_ % 3 :] + CONFIGS[: round_ % 3]
                for fmt, (path, request) in formats.items():
                    for c in concurrencies:
                        for name in order:
                            url = servers[name].url + path
                            cpu = cpu_seconds(servers[name])
                            run = run_client(url, request, c, args.warmup, args.seconds)
                            run["cpu_s"] = cpu_seconds(servers[name]) - cpu
                            cell = runs.setdefault(fmt, {}).setdefault(f"c={c}", {})
                            cell.setdefault(name, []).append(run)
                            rps = len(run["latencies_ms"]) / run["elapsed_s"]
                            console.print(
                                f"round {round_ + 1}/{args.rounds} {fmt} c={c} {name}: "
                                f"{rps:.0f} req/s, {run['errors']} errors"
                            )

    results: dict[str, dict[str, dict[str, Any]]] = {}
    table = Table(title="lr (2 replicas) through one gateway, one row per request, closed loop")
    for column in ("format", "c", "backend", "req/s", "p50 ms", "p99 ms", "errors",
                   f"x {BASE}", "lowest round", "CPU ms/req"):  # fmt: skip
        table.add_column(column, justify="right")
    for fmt, cells in runs.items():
        for at, by_name in cells.items():
            summed = {name: summary(done) for name, done in by_name.items()}
            base = summed[BASE]
            for name, row in summed.items():
                row["x_local_workers"] = row["rps"] / base["rps"]
                row["lowest_round_x_local_workers"] = min(
                    a / b for a, b in zip(row["rps_by_round"], base["rps_by_round"], strict=True)
                )
                table.add_row(
                    fmt, at, name, f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}",
                    f"{row['p99_ms']:.2f}", str(row["errors"]),
                    f"{row['x_local_workers']:.2f}", f"{row['lowest_round_x_local_workers']:.2f}",
                    f"{row['cpu_ms_per_request']:.3f}",
                )  # fmt: skip
            results.setdefault(fmt, {})[at] = summed
    console.print(table)
    aims = {
        fmt: {
            "ray_x_local_workers": by_c[f"c={AIM_C}"]["ray"]["x_local_workers"],
            "met": by_c[f"c={AIM_C}"]["ray"]["x_local_workers"] >= AIM,
        }
        for fmt, by_c in results.items()
        if f"c={AIM_C}" in by_c
    }
    for fmt, check in aims.items():
        mark = "met" if check["met"] else "NOT met"
        console.print(
            f"aim ray >= {AIM}x local workers at c={AIM_C} ({fmt}): "
            f"{check['ray_x_local_workers']:.2f}x, {mark}"
        )
    report = {
        "benchmark": "gateway end to end on each execution backend",
        "command": " ".join(
            [".venv/bin/python", "bench/gateway_backends.py", *(argv or sys.argv[1:])]
        ),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_after": os.getloadavg(),
        },
        "endpoint": "lr: sklearn LogisticRegression as ONNX, 16 float32 inputs, 2 replicas",
        "rounds": args.rounds,
        "seconds_per_cell": args.seconds,
        "warmup_s_per_cell": args.warmup,
        "aim": {"ray_x_local_workers_at_c": AIM_C, "at_least": AIM, "by_format": aims},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    if "--client" in sys.argv[1:]:
        _client_main(sys.argv[1:])
    else:
        main()

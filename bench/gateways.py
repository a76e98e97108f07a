"""One gateway against two: ``modelplane up --gateways 1`` and ``--gateways 2`` under the same
load, and the throughput ratio (issue 13: two gateways at least 1.6x one on two unpinned cores).

One home (SQLite store) is prepared with the ``fraud-score`` endpoint (a scikit-learn
logistic regression over two floats, records JSON). Each round starts ``modelplane up`` on
it, waits until every gateway answers, then drives it from a load client process of its own:
``--concurrency`` keep-alive connections (the kernel spreads connections, not requests, over
the gateways), one row per request, closed loop, ``--seconds`` after a warm-up. Rounds
alternate 1, 2, 1, 2… so a neighbour's load on a shared machine falls on both alike, and each
round's pair gives a ratio. Beside req/s: CPU milliseconds per request of ``up``'s whole
process tree (gateways and workers), which a busy neighbour moves less. Prints a table and
writes ``bench/results/gateways.json``.

Run from the repository root:

    .venv/bin/python bench/gateways.py                 # 3 rounds each, 8 s per round
    .venv/bin/python bench/gateways.py --rounds 1 --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "gateways.json"
CLI = str(Path(sys.executable).with_name("modelplane"))
AIM = 1.6


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare(work: Path) -> dict[str, str]:
    from tests.kit.fraud import FRAUD_ENDPOINT, push_fraud_versions

    env = {**os.environ, "MODELPLANE_HOME": str(work / "home")}
    push_fraud_versions(env, work, rows=200)
    (work / "endpoint.yaml").write_text(FRAUD_ENDPOINT)
    subprocess.run([CLI, "apply", "-f", str(work / "endpoint.yaml")], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    return env


def _gateways_answering(url: str) -> set[str]:
    import httpx

    seen = set()
    for _ in range(24):
        try:
            with httpx.Client(timeout=5) as client:
                answer = client.post(url, json={"instances": [{"a": 1.0, "b": 0.0}]})
        except httpx.TransportError:
            continue
        if answer.status_code == 200:
            seen.add(answer.headers.get("modelplane-gateway", "1"))
    return seen


def _round(env: dict[str, str], gateways: int, concurrency: int, seconds: float) -> dict[str, Any]:
    port, api_port = _free_port(), _free_port()
    up = subprocess.Popen(
        [CLI, "up", "--port", str(port), "--api-port", str(api_port), "--gateways", str(gateways),
         "--sample-rate", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/endpoints/fraud-score:predict"
    try:
        deadline = time.monotonic() + 180
        while len(_gateways_answering(url)) < gateways:
            if time.monotonic() > deadline or up.poll() is not None:
                raise RuntimeError(f"up --gateways {gateways} did not serve")
            time.sleep(0.5)
        _client(url, concurrency, 2.0)  # warm-up
        before = _tree_cpu_s(up.pid)
        result = _client(url, concurrency, seconds)
        used = _tree_cpu_s(up.pid) - before
        result["cpu_ms_per_request"] = 1000 * used / max(result["answered"], 1)
        return result
    finally:
        up.terminate()
        up.wait(timeout=120)


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``up`` and every process under it (gateways, workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _client(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    args = [sys.executable, __file__, "--client", url, "--concurrency", str(concurrency),
            "--seconds", str(seconds)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _load(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    body = json.dumps({"instances": [{"a": 0.3, "b": -1.2}]}).encode()
    headers = {"content-type": "application/json"}
    by_gateway: dict[str, int] = {}
    errors = 0
    end = time.monotonic() + seconds

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < end:
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        continue
                    gateway = response.headers.get("modelplane-gateway", "1")
                    by_gateway[gateway] = by_gateway.get(gateway, 0) + 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

    began = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        await asyncio.gather(*(caller(session) for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    answered = sum(by_gateway.values())
    return {"rps": answered / elapsed, "answered": answered, "errors": errors,
            "by_gateway": by_gateway, "elapsed_s": elapsed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(_load(args.client, args.concurrency, args.seconds))))
        return
    from rich.console import Console
    from rich.table import Table

    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        env = _prepare(Path(tmp))
        for _ in range(args.rounds):
            for gateways in (1, 2):
                runs[gateways].append(_round(env, gateways, args.concurrency, args.seconds))
    rps = {g: sum(r["rps"] for r in found) / len(found) for g, found in runs.items()}
    ratio = rps[2] / rps[1]
    # each round's two runs back to back: a neighbour's burst falls on one pair, not all
    paired = sorted(two["rps"] / one["rps"] for one, two in zip(runs[1], runs[2], strict=True))
    table = Table(title=f"fraud-score, records JSON, c={args.concurrency}, keep-alive")
    columns = ("gateways", "req/s (mean)", "rounds", "CPU ms/request", "errors", "by gateway")
    for column in columns:
        table.add_column(column)
    for gateways, found in runs.items():
        spread: dict[str, int] = {}
        for run in found:
            for g, n in run["by_gateway"].items():
                spread[g] = spread.get(g, 0) + n
        table.add_row(str(gateways), f"{rps[gateways]:.0f}",
                      ", ".join(f"{r['rps']:.0f}" for r in found),
                      f"{sum(r['cpu_ms_per_request'] for r in found) / len(found):.2f}",
                      str(sum(r["errors"] for r in found)), json.dumps(spread))  # fmt: skip
    Console().print(table)
    Console().print(
        f"two gateways / one: {ratio:.2f}x of the means, rounds "
        + ", ".join(f"{r:.2f}x" for r in paired)
        + f" (aim {AIM}x on free cores; load average {os.getloadavg()[0]:.1f})"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "gateways", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg": os.getloadavg()},
        "concurrency": args.concurrency, "seconds": args.seconds, "rounds": args.rounds,
        "rps": {str(g): v for g, v in rps.items()}, "ratio": ratio, "paired_ratios": paired,
        "aim": AIM,
        "runs": {str(g): found for g, found in runs.items()},
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()

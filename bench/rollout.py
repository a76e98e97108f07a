"""Issue 4's check: rollback speed under load, ``status`` at 100 endpoints, shadow cost.

Issue 12's check is the first measure from the moment ``modelplane rollback`` is invoked:
median under 1 s to 100 % of answers from stable.

1. **Rollback under load**: ``modelplane up`` in a subprocess (a temporary
   ``MODELPLANE_HOME``), two LogisticRegression versions of ``fraud`` pushed (v1 is
   ``champion``), the ``fraud-score`` endpoint applied, closed-loop load from a few threads.
   Each round starts a canary (one 50% step held for ten minutes), waits for canary
   answers, runs ``modelplane rollback`` and measures from the CLI returning to the last
   request *sent* after that moment that fraud:2 still answered (0 when none did).
2. **status with 100 endpoints**: ``bench/status.py``'s store and timer: ``modelplane
   --version`` (the start-up floor), ``status`` and ``status --json``, median per process;
   and (issue 12) the other commands typed in a hurry, ``get``, ``explain``, ``pause``,
   ``resume``, ``promote`` and ``rollback``, each under 0.5 s.
3. **Shadow cost on the primary path**: one gateway (``ServerThread``) serving ``plain``
   (ONNX logistic regression v1) and ``shadowed`` (v1, plus a 100% shadow to v2); load from
   a separate client process (aiohttp, closed loop) at concurrency 1 and 8, plain and
   shadowed runs alternating, three each. The shadow's copies are counted afterwards.

The machine has two cores and is shared: read ratios, and the load average stored next to
the numbers. Prints one table and writes ``bench/results/rollout.json``.

    .venv/bin/python bench/rollout.py [--quick] [--rounds 5] [--threads 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
# run as a script, only bench/ is on sys.path; bench.status lives under the repository root
sys.path.insert(0, str(REPO))

from tests.kit.fraud import FRAUD_ENDPOINT  # noqa: E402

from bench._common import FEATURES, latency_summary, load_client  # noqa: E402
from bench.status import HURRIED_AIM_MS, populate, time_hurried, time_process  # noqa: E402

__all__ = ["main"]

CLI = str(Path(sys.executable).with_name("modelplane"))
RESULTS = REPO / "bench" / "results" / "rollout.json"
ROLLBACK_AIM_MS = 1000.0
STATUS_AIM_MS = 200.0
ROLLBACK_REASON = "rollback: all traffic to stable"
"""The reason ``modelplane rollback`` records on its traffic change."""
LOAD_MAX_S = 1800.0
"""A load thread gives up after this, should the bench hang between rounds."""
SETTLE_S = 1.5
"""After a rollback: long enough for any request sent after it to have been answered."""

SLOW = """
kind: Rollout
steps: [{weight: 50, hold_s: 600}]
max_duration_s: 3600
"""


@dataclass(frozen=True)
class Mode:
    """How long each part runs."""

    rounds: int
    threads: int
    status_runs: int
    warmup_s: float
    run_s: float
    repeats: int
    concurrency: tuple[int, ...] = (1, 8)


QUICK = Mode(rounds=2, threads=3, status_runs=3, warmup_s=1.0, run_s=2.0, repeats=2)
FULL = Mode(rounds=5, threads=3, status_runs=5, warmup_s=3.0, run_s=5.0, repeats=3)


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"modelplane {' '.join(args)} failed: {done.stderr}")
    return done.stdout


# ---------------------------------------------------------------- 1. rollback under load


class Load(threading.Thread):
    """Closed-loop requests, each recorded as (sent at, status, model version); a transport
    error is status 0, so it counts as a failure instead of ending the thread."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.seed, self.stop = url, seed, threading.Event()
        self.deadline = time.monotonic() + LOAD_MAX_S
        self.seen: list[tuple[float, int, str]] = []

    def run(self) -> None:
        import httpx

        rng = np.random.default_rng(self.seed)
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                a, b = rng.normal(size=2)
                sent = time.monotonic()
                try:
                    response = http.post(self.url, json={"instances": [{"a": a, "b": b}]})
                except httpx.TransportError:
                    self.seen.append((sent, 0, ""))
                    continue
                version = response.headers.get("modelplane-model-version", "")
                self.seen.append((sent, response.status_code, version))


def _push_fraud(env: dict[str, str], work: Path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from modelplane.registry.build import package

    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    for version, c in enumerate((1.0, 0.5), start=1):
        model = LogisticRegression(C=c).fit(frame, (frame["a"] > 0).astype(int))
        built = package(
            model, name="fraud", output_dir=work / f"p{version}", sample_input=frame.head()
        )
        cli(env, "push", str(built.path), *(("--alias", "champion") if version == 1 else ()))


def _serves(url: str) -> bool:
    import httpx

    try:
        response = httpx.post(url, json={"instances": [{"a": 1.0, "b": 0.0}]}, timeout=5)
    except httpx.TransportError:
        return False
    return response.status_code == 200


def _phase(env: dict[str, str]) -> str:
    resources = json.loads(cli(env, "get", "rollouts", "--json"))
    named = [r for r in resources if r["name"] == "fraud-score"] or resources
    return str(named[0]["status"]["state"]["phase"]) if named and named[0]["status"] else ""


@contextmanager
def _up(env: dict[str, str], log: Path) -> Iterator[str]:
    """``modelplane up`` on free loopback ports; yields the endpoint's predict URL."""
    port, api_port = free_port(), free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [CLI, "up", "--port", str(port), "--api-port", str(api_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}/v1/endpoints/fraud-score:predict"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@dataclass(frozen=True)
class Round:
    """Monotonic moments of one rollout then rollback."""

    started: float
    invoked: float
    returned: float
    settled: float


def _one_rollback(env: dict[str, str], loads: Sequence[Load], slow: Path) -> Round:
    def canary_since(t: float) -> bool:
        return any(s > t and v == "fraud:2" for load in loads for s, _, v in load.seen[-200:])

    started = time.monotonic()
    cli(env, "rollout", "fraud-score", "--to", "fraud:2", "-f", str(slow))
    wait_for(lambda: canary_since(started), 60, "canary traffic")
    invoked = time.monotonic()
    cli(env, "rollback", "fraud-score")
    returned = time.monotonic()
    wait_for(lambda: _phase(env) == "rolled_back", 30, "the rollback", every_s=0.2)
    time.sleep(SETTLE_S)
    return Round(started, invoked, returned, time.monotonic())


def _rollback_writes(env: dict[str, str], mono_minus_wall: float) -> list[float]:
    """When each rollback's traffic change was written to the store (audit log ``at``), on
    the monotonic clock the load threads use: the moment the data plane can start to move."""
    events = json.loads(cli(env, "audit", "log", "--json", "--limit", "500"))
    moments = []
    for event in sorted(events, key=lambda e: int(e["seq"])):
        if event["reason"] == ROLLBACK_REASON:
            at = datetime.fromisoformat(event["at"])
            # stored as UTC; SQLite may hand it back without its zone
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            moments.append(at.timestamp() + mono_minus_wall)
    return moments


def _last_canary_ms(loads: Sequence[Load], since: float, until: float) -> tuple[float, int]:
    """Milliseconds from ``since`` to the last request sent before ``until`` that fraud:2
    answered (0 when none), and how many there were."""
    late = [s for load in loads for s, _, v in load.seen if since < s < until and v == "fraud:2"]
    return ((max(late) - since) * 1000 if late else 0.0), len(late)


def _round_summary(loads: Sequence[Load], done: Round, written: float | None) -> dict[str, Any]:
    to_stable, late = _last_canary_ms(loads, done.returned, done.settled)
    from_invoke, _ = _last_canary_ms(loads, done.invoked, done.settled)
    from_write = None if written is None else _last_canary_ms(loads, written, done.settled)[0]
    return {
        "canary_seen_s": done.invoked - done.started,
        "rollback_cli_ms": (done.returned - done.invoked) * 1000,
        "written_after_invoke_ms": None if written is None else (written - done.invoked) * 1000,
        "to_stable_ms": to_stable,
        "late_canary_answers": late,
        "from_invoke_ms": from_invoke,
        "from_write_ms": from_write,
    }


def _run_rounds(env: dict[str, str], url: str, mode: Mode, slow: Path, console: Console) -> Any:
    loads = [Load(url, seed) for seed in range(mode.threads)]
    for load in loads:
        load.start()
    began = time.monotonic()
    rounds: list[Round] = []
    try:
        for i in range(mode.rounds):
            rounds.append(_one_rollback(env, loads, slow))
            console.log(f"rollback {i + 1}/{mode.rounds} done")
    finally:
        for load in loads:
            load.stop.set()
        for load in loads:
            load.join(timeout=30)
    return loads, rounds, time.monotonic() - began


def bench_rollback(mode: Mode, console: Console) -> dict[str, Any]:
    mono_minus_wall = time.monotonic() - time.time()
    with tempfile.TemporaryDirectory(prefix="modelplane-rollout-bench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "MODELPLANE_HOME": str(work / "home")}
        _push_fraud(env, work)
        (work / "endpoint.yaml").write_text(FRAUD_ENDPOINT)
        (work / "slow.yaml").write_text(SLOW)
        with _up(env, work / "up.log") as url:
            cli(env, "apply", "-f", str(work / "endpoint.yaml"))
            wait_for(lambda: _serves(url), 120, "the endpoint", every_s=0.2)
            loads, rounds, elapsed = _run_rounds(env, url, mode, work / "slow.yaml", console)
            writes = _rollback_writes(env, mono_minus_wall)
    # one traffic write per rollback; if the log disagrees, leave that measure out
    paired = writes if len(writes) == len(rounds) else [None] * len(rounds)
    summaries = [_round_summary(loads, r, w) for r, w in zip(rounds, paired, strict=True)]
    seen = [row for load in loads for row in load.seen]

    def stat(key: str) -> dict[str, float] | None:
        values = [r[key] for r in summaries if r[key] is not None]
        return {"median": statistics.median(values), "max": max(values)} if values else None

    return {
        "rounds": summaries,
        "threads": mode.threads,
        "to_stable_ms": stat("to_stable_ms"),
        "from_invoke_ms": stat("from_invoke_ms"),
        "from_write_ms": stat("from_write_ms"),
        "rollback_cli_ms": stat("rollback_cli_ms"),
        "requests": len(seen),
        "failed": sum(status != 200 for _, status, _ in seen),
        "load_rps": len(seen) / elapsed,
    }


# ---------------------------------------------------------------- 2. status, 100 endpoints


def bench_status(mode: Mode, endpoints: int = 100) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="modelplane-status-bench-") as tmp:
        env = {**os.environ, "MODELPLANE_HOME": tmp}
        populate(f"sqlite:///{tmp}/state.db", endpoints)
        median_ms = {
            "modelplane --version": time_process(["--version"], env, mode.status_runs),
            "modelplane status": time_process(["status"], env, mode.status_runs),
            "modelplane status --json": time_process(["status", "--json"], env, mode.status_runs),
        }
        median_ms |= time_hurried(f"sqlite:///{tmp}/state.db", env, mode.status_runs)
    return {"endpoints": endpoints, "runs": mode.status_runs, "median_ms": median_ms}


# ---------------------------------------------------------------- 3. shadow cost


def _lr_sources(work: Path) -> list[Any]:
    """Two ONNX logistic regressions (different C), as model versions lr:1 and lr:2."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from modelplane.dataplane.endpoint_runtime import ModelSource
    from modelplane.registry.build import package

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    sources = []
    for version, c in ((1, 1.0), (2, 0.05)):
        onx = to_onnx(LogisticRegression(C=c).fit(x, y), x[:1], options={"zipmap": False})
        built = package(onx, name="lr", output_dir=work / f"lr{version}", sample_input=x[:4])
        sources.append(ModelSource(f"lr:{version}", built.path, built.manifest, built.digest))
    return sources


def _shadow_endpoints(work: Path) -> list[Any]:
    from modelplane.dataplane.endpoint_runtime import EndpointConfig
    from modelplane.spec.contract import Contract
    from modelplane.spec.endpoint import Endpoint, Route, Shadow

    v1, v2 = _lr_sources(work)
    signature = v1.manifest.signature
    configs = []
    for name, shadows in (("plain", ()), ("shadowed", (Shadow(model=v2.label, percent=100),))):
        contract = Contract(name=name, inputs=signature.inputs, outputs=signature.outputs)
        endpoint = Endpoint(
            name=name,
            team="bench",
            contract=contract,
            routes=(Route(model=v1.label),),
            shadows=shadows,
        )
        models = {v1.label: v1, v2.label: v2} if shadows else {v1.label: v1}
        configs.append(EndpointConfig(endpoint, models))
    return configs


def _shadow_point(url: str, concurrency: int, mode: Mode, console: Console) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "shadowed": []}
    for name in runs:
        load_client(url.format(name), concurrency, mode.warmup_s)
    for repeat in range(mode.repeats):
        # alternate, so drift in the machine's load hits both alike
        for name, done in runs.items():
            done.append(load_client(url.format(name), concurrency, mode.run_s))
        console.log(f"shadow c={concurrency} repeat {repeat + 1}/{mode.repeats}")
    point: dict[str, Any] = {name: latency_summary(r) for name, r in runs.items()}
    plain, shadowed = point["plain"], point["shadowed"]
    point["ratio"] = {k: shadowed[k] / plain[k] for k in ("p50_ms", "p99_ms", "rps")}
    # each run on its own too: shows how much of a ratio is the machine's noise
    point["per_run"] = {name: [latency_summary([one]) for one in r] for name, r in runs.items()}
    return point


def bench_shadow(mode: Mode, console: Console) -> dict[str, Any]:
    from modelplane.dataplane.gateway import GatewayConfig
    from modelplane.dataplane.server import ServerThread

    with tempfile.TemporaryDirectory(prefix="modelplane-shadow-bench-") as tmp:
        configs = _shadow_endpoints(Path(tmp))
        with ServerThread(configs, config=GatewayConfig(seed=7)) as server:
            url = f"{server.url}/v2/models/{{}}/infer"
            by_concurrency = {
                str(c): _shadow_point(url, c, mode, console) for c in mode.concurrency
            }
            # let the last copies land before reading the counters
            time.sleep(0.5)
            comparison = server.gateway.handler.endpoints["shadowed"].shadows[0].comparison
            copies = {
                "compared": comparison.compared,
                "dropped": comparison.dropped,
                "failed": comparison.failed,
                "disagreed": comparison.disagreed,
            }
    return {
        "run_s": mode.run_s,
        "repeats": mode.repeats,
        "by_concurrency": by_concurrency,
        "shadow_copies": copies,
    }


# ---------------------------------------------------------------- report


def _uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip()


def _aim(met: bool) -> str:
    return "[green]met[/green]" if met else "[red]missed[/red]"


def _ms(stat: dict[str, float] | None) -> tuple[str, str]:
    if stat is None:
        return "n/a", ""
    return f"{stat['median']:.0f} ms", f"max {stat['max']:.0f} ms"


def _rollback_rows(table: Table, rollback: dict[str, Any]) -> None:
    rounds = len(rollback["rounds"])
    worst = (rollback["to_stable_ms"] or {}).get("max", float("inf"))
    table.add_row(
        f"rollback: CLI returned -> 100% stable (median of {rounds})",
        *_ms(rollback["to_stable_ms"]),
        f"< 1000 ms {_aim(worst < ROLLBACK_AIM_MS)}",
    )
    median = (rollback["from_invoke_ms"] or {}).get("median", float("inf"))
    table.add_row(
        "rollback: CLI invoked -> 100% stable",
        *_ms(rollback["from_invoke_ms"]),
        f"median < 1000 ms {_aim(median < ROLLBACK_AIM_MS)}",
    )
    table.add_row("rollback: store written -> 100% stable", *_ms(rollback["from_write_ms"]), "")
    table.add_row("modelplane rollback (the process)", *_ms(rollback["rollback_cli_ms"]), "")
    table.add_row(
        f"requests failed under load ({rollback['threads']} threads)",
        f"{rollback['failed']} / {rollback['requests']}",
        f"{rollback['load_rps']:.0f} req/s",
        f"0 {_aim(rollback['failed'] == 0)}",
    )


def _status_rows(table: Table, status: dict[str, Any]) -> None:
    floor = status["median_ms"]["modelplane --version"]
    for command, ms in status["median_ms"].items():
        aim = f"< 200 ms {_aim(ms < STATUS_AIM_MS)}" if command == "modelplane status" else ""
        if command not in ("modelplane --version", "modelplane status", "modelplane status --json"):
            aim = f"< 500 ms {_aim(ms < HURRIED_AIM_MS)}"
        name = f"{command} ({status['endpoints']} endpoints, median of {status['runs']})"
        table.add_row(name, f"{ms:.0f} ms", f"{ms / floor:.2f}x --version", aim)


def _shadow_rows(table: Table, shadow: dict[str, Any]) -> None:
    for concurrency, point in shadow["by_concurrency"].items():
        plain, shadowed, ratio = point["plain"], point["shadowed"], point["ratio"]
        for key, label, unit in (
            ("p50_ms", "p50", "ms"),
            ("p99_ms", "p99", "ms"),
            ("rps", "throughput", "req/s"),
        ):
            table.add_row(
                f"shadow 100%, c={concurrency}, {label}: plain -> shadowed",
                f"{plain[key]:.2f} -> {shadowed[key]:.2f} {unit}",
                f"{ratio[key]:.2f}x",
                "",
            )
    copies = shadow["shadow_copies"]
    table.add_row(
        "shadow copies compared / dropped / failed",
        f"{copies['compared']} / {copies['dropped']} / {copies['failed']}",
        "",
        "",
    )


def _table(results: dict[str, Any]) -> Table:
    table = Table(
        title="issue 4: rollback, status, shadow (2 shared cores: read ratios)",
        caption=f"start: {results['uptime_start']}\nend:   {results['uptime_end']}",
    )
    table.add_column("measure")
    for column in ("value", "note", "aim"):
        table.add_column(column, justify="right")
    _rollback_rows(table, results["rollback"])
    _status_rows(table, results["status"])
    _shadow_rows(table, results["shadow"])
    return table


def run(mode: Mode, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {
        "command": [Path(sys.executable).name, *sys.argv],
        "mode": asdict(mode),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "loadavg_start": os.getloadavg(),
        "uptime_start": _uptime(),
        "aims": {
            "rollback_to_stable_ms": ROLLBACK_AIM_MS,
            "status_ms": STATUS_AIM_MS,
            "rollback_from_invoke_median_ms": ROLLBACK_AIM_MS,
            "hurried_command_ms": HURRIED_AIM_MS,
        },
    }
    console.log("1/3 rollback under load")
    results["rollback"] = bench_rollback(mode, console)
    console.log("2/3 status with 100 endpoints")
    results["status"] = bench_status(mode)
    console.log("3/3 shadow cost on the primary path")
    results["shadow"] = bench_shadow(mode, console)
    results["loadavg_end"] = os.getloadavg()
    results["uptime_end"] = _uptime()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2, 2 s per shadow run")
    parser.add_argument("--rounds", type=int, help="rollbacks (default 5, 2 with --quick)")
    parser.add_argument("--threads", type=int, help="load threads for the rollbacks (2-4)")
    opts = parser.parse_args()
    mode = QUICK if opts.quick else FULL
    overrides = {"rounds": opts.rounds, "threads": opts.threads}
    mode = Mode(**{**asdict(mode), **{k: v for k, v in overrides.items() if v is not None}})
    # wide enough for one row per measure when the output is not a terminal
    console = Console(width=max(Console().width, 120))
    results = run(mode, console)
    console.print(_table(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.log(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

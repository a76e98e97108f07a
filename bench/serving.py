"""Serving benchmark: modelplane against a floor and three peers, side by side, in one run.

The same models (sklearn LogisticRegression and HistGradientBoostingClassifier on 16 float
features, seeded synthetic data) are served in turn by: the floor (a bare ASGI app under
uvicorn answering a constant), modelplane (ONNX package), MLServer, BentoML and Ray Serve
(joblib, each in its own venv under ``bench/.venvs/``). Each server's whole process tree is
pinned to CPU 0, ``wrk`` to CPU 1; ``wrk -t1 -cC`` runs a warm-up then a measured run per
concurrency, one row per request, then 64-row requests. Also: cold start (process start to
the first HTTP 200 on predict) and PSS summed over the server's process tree.

    .venv/bin/python bench/serving.py --setup          # peer venvs (idempotent), wrk
    .venv/bin/python bench/serving.py                  # full run (~40 min)
    .venv/bin/python bench/serving.py --quick          # smoke run
    .venv/bin/python bench/serving.py --only floor,mlserver:workers0 --models logreg

Writes ``bench/results/serving.json`` and ``bench/results/serving.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["main"]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PEER_APPS = BENCH / "serving_peers"
VENVS = BENCH / ".venvs"
MODELPLANE_BIN = Path(
    os.environ.get("MPBENCH_MODELPLANE_BIN", REPO / ".venv" / "bin" / "modelplane")
)
"""``modelplane`` executable; the environment variable points the bench at another build."""
SERVER_CPU = "0"
WRK_CPU = "1"
FEATURES = 16
SEED = 20261101
console = Console(width=140)

PEER_REQUIREMENTS: dict[str, list[str]] = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"],
    "bentoml": ["bentoml==1.4.39", "uvloop", "httptools"],
    "ray": ["ray[serve]==2.60.0"],
}
"""Each peer's own venv; scikit-learn and joblib are pinned to ours so the pickles load."""

CONFIGS: dict[str, dict[str, str]] = {
    "floor": {"constant": "uvicorn, uvloop + httptools, access log off, constant JSON"},
    "modelplane": {
        "default": "modelplane serve, adaptive batching defaults",
        "nobatch": "modelplane serve --max-batch-size 1",
    },
    "mlserver": {
        "default": "defaults (parallel_workers 1, debug/access log on)",
        "workers0": "parallel_workers 0 (in-process), debug off",
        "batch64": "parallel_workers 0, debug off, max_batch_size 64, max_batch_time 2 ms",
    },
    "bentoml": {
        "default": "defaults (+ uvloop/httptools installed)",
        "noaccesslog": "access log off",
        "batchable": "access log off, @bentoml.api(batchable=True, max_batch_size=64)",
    },
    "ray": {
        "default": "defaults (max_ongoing_requests 5)",
        "ongoing64": "max_ongoing_requests 64, access log off",
        "batch": "max_ongoing_requests 64, access log off, @serve.batch(64, 2 ms)",
    },
}
"""Server: its configurations, each with what it changes."""

PEERS = ("mlserver", "bentoml", "ray")
STARTUP_TIMEOUT_S = {"floor": 30.0, "modelplane": 60.0, "mlserver": 90.0, "bentoml": 90.0}
DEFAULT_STARTUP_TIMEOUT_S = 150.0
STOP_GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class Options:
    duration: int
    warmup: int
    concurrency: tuple[int, ...]
    batch_rows: int
    batch_concurrency: int
    models: tuple[str, ...]
    only: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one server and where to send predictions."""

    argv: list[str]
    path: str
    body: str  # "v2" or "bento"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(slots=True)
class Run:
    rows: int
    concurrency: int
    rps: float = 0.0
    preds_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    error: str = ""


@dataclass(slots=True)
class Result:
    server: str
    config: str
    model: str
    status: str = "ok"  # ok, skipped, failed
    reason: str = ""
    cold_start_s: float | None = None
    pss_mb_ready: float | None = None
    pss_mb_loaded: float | None = None
    processes: int = 0
    answer: str = ""
    answer_check: str = ""
    runs: list[Run] = field(default_factory=list)


class Failed(RuntimeError):
    """A server could not be started or died while measured."""


# ---------------------------------------------------------------- setup


def setup() -> None:
    """Create each peer's venv (skipped when its requirements are already installed)."""
    import joblib
    import sklearn

    if shutil.which("wrk") is None:
        console.print("installing wrk (apt-get)")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, timeout=600)
    common = [f"scikit-learn=={sklearn.__version__}", f"joblib=={joblib.__version__}"]
    for peer, requirements in PEER_REQUIREMENTS.items():
        wanted = "\n".join([*requirements, *common])
        venv = VENVS / peer
        marker = venv / ".mpbench-requirements"
        if marker.is_file() and marker.read_text() == wanted:
            console.print(f"[green]{peer}[/]: up to date ({venv})")
            continue
        console.print(f"[bold]{peer}[/]: installing {escape(' '.join(wanted.splitlines()))}")
        if not (venv / "bin" / "python").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *wanted.splitlines()], check=True, timeout=3600)
        marker.write_text(wanted)
    console.print(f"peer venvs ready under {VENVS}")


def peer_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    dists = {"mlserver": "mlserver", "bentoml": "bentoml", "ray": "ray"}
    for peer, dist in dists.items():
        python = VENVS / peer / "bin" / "python"
        if not python.is_file():
            continue
        code = f"import importlib.metadata as m; print(m.version({dist!r}))"
        out = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        versions[peer] = out.stdout.strip() or out.stderr.strip()[-200:]
    return versions


# ---------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    joblib_path: Path
    onnx_path: Path
    package_dir: Path | None
    package_error: str
    rows: list[list[float]]
    labels: list[int]


def _patch_skl2onnx_bool_attribute() -> None:
    """skl2onnx passes numpy bools for ``nodes_missing_value_tracks_true``; onnx wants ints."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(
                kwargs["nodes_missing_value_tracks_true"]
            )
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node


def build_models(names: Sequence[str], work: Path) -> dict[str, Model]:
    """Train each model on seeded data; save joblib (peers), ONNX and a package (modelplane)."""
    import joblib
    import numpy as np
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    _patch_skl2onnx_bool_attribute()
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
    y = (x @ rng.normal(size=FEATURES) + 0.3 * rng.normal(size=len(x)) > 0).astype(np.int64)
    rows = [[round(float(v), 5) for v in row] for row in x[:64]]
    estimators = {
        "logreg": lambda: LogisticRegression(max_iter=1000),
        "hgb": lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0),
    }
    models: dict[str, Model] = {}
    for name in names:
        folder = work / "models" / name
        folder.mkdir(parents=True)
        estimator = estimators[name]().fit(x, y)
        joblib.dump(estimator, folder / "model.joblib")
        onx = to_onnx(
            estimator,
            initial_types=[("input", FloatTensorType([None, FEATURES]))],
            options={id(estimator): {"zipmap": False}},
            target_opset=17,
        )
        (folder / "model.onnx").write_bytes(onx.SerializeToString())
        package_dir, error = _package(folder / "model.onnx", name, x[:4], work)
        labels = [int(v) for v in estimator.predict(x[:64])]
        models[name] = Model(
            name, folder / "model.joblib", folder / "model.onnx", package_dir, error, rows, labels
        )
    return models


def _package(onnx_path: Path, name: str, sample: Any, work: Path) -> tuple[Path | None, str]:
    try:
        from modelplane.registry.build import package_file

        built = package_file(
            onnx_path, name=name, output_dir=work / "packages" / name, sample_input=sample
        )
    except Exception as exc:
        return None, f"packaging failed: {type(exc).__name__}: {exc}"
    return built.path, ""


# ---------------------------------------------------------------- bodies and wrk


def body_for(kind: str, rows: list[list[float]]) -> str:
    if kind == "bento":
        return json.dumps({"rows": rows}, separators=(",", ":"))
    flat = [v for row in rows for v in row]
    tensor = {"name": "input", "shape": [len(rows), FEATURES], "datatype": "FP32", "data": flat}
    return json.dumps({"inputs": [tensor]}, separators=(",", ":"))


WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%BODY%]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"max_us":%.0f,"status":%.0f,"connect":%.0f,"read":%.0f,' ..
    '"write":%.0f,"timeout":%.0f}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def write_script(work: Path, kind: str, rows: list[list[float]]) -> Path:
    path = work / f"wrk-{kind}-{len(rows)}.lua"
    if not path.exists():
        path.write_text(WRK_LUA.replace("%BODY%", body_for(kind, rows)))
    return path


def run_wrk(url: str, script: Path, conns: int, seconds: int) -> dict[str, float]:
    argv = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    argv += ["--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            parsed: dict[str, float] = json.loads(line.removeprefix("WRKJSON "))
            return parsed
    raise Failed(f"wrk rc={out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")


def measure(url: str, script: Path, rows: int, conns: int, opts: Options) -> Run:
    if opts.warmup > 0:
        run_wrk(url, script, conns, opts.warmup)
    raw = run_wrk(url, script, conns, opts.duration)
    seconds = max(raw["duration_us"] / 1e6, 1e-9)
    errors = sum(int(raw[k]) for k in ("status", "connect", "read", "write", "timeout"))
    ok = max(raw["requests"] - raw["status"], 0)
    return Run(
        rows=rows,
        concurrency=conns,
        rps=raw["requests"] / seconds,
        preds_per_s=ok * rows / seconds,
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        requests=int(raw["requests"]),
        errors=errors,
    )


# ---------------------------------------------------------------- process trees


def become_subreaper() -> None:
    """Orphans of a server (Ray's daemons) re-parent to us, so the tree stays findable."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _stat(pid: int) -> tuple[int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> list[int]:
    """Living (non-zombie) descendants of ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None and info[1] != "Z":
                children.setdefault(info[0], []).append(int(entry.name))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def tree_pss_mb() -> tuple[float, int]:
    """PSS summed over every process below us (only the server runs while this is read)."""
    total_kb = 0
    pids = descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
    return total_kb / 1024, len(pids)


def kill_tree(proc: subprocess.Popen[bytes] | None) -> None:
    """TERM the server's group and every descendant of ours, then KILL what is left."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        pids = descendants(os.getpid())
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, sig)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _reap()
            if not descendants(os.getpid()):
                return
            time.sleep(0.1)
    _reap()


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def modelplane_serve_help() -> str | None:
    """``modelplane serve --help`` text, or None while the command does not exist."""
    if not MODELPLANE_BIN.is_file():
        return None
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    try:
        out = subprocess.run(
            [str(MODELPLANE_BIN), "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return out.stdout if out.returncode == 0 else None


def unavailable(server: str, config: str, model: Model | None, serve_help: str | None) -> str:
    """Why this server cannot be measured here, or "" if it can."""
    if server in PEERS and not (VENVS / server / "bin" / "python").is_file():
        return f"no venv at {VENVS / server}: run `bench/serving.py --setup`"
    if server == "modelplane":
        if serve_help is None:
            return "`modelplane serve` does not exist yet (skipped)"
        if config == "nobatch" and "--max-batch-size" not in serve_help:
            return "`modelplane serve` has no --max-batch-size flag (skipped)"
        if model is not None and model.package_dir is None:
            return model.package_error
    return ""


def launch_for(
    server: str, config: str, model: Model | None, port: int, work: Path, serve_help: str
) -> Launch:
    if server == "floor":
        argv = [str(REPO / ".venv" / "bin" / "uvicorn"), "floor_app:app", "--app-dir"]
        argv += [str(PEER_APPS), "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
        argv += ["--http", "httptools", "--no-access-log", "--lifespan", "off"]
        return Launch(argv, "/v2/models/floor/infer", "v2")
    assert model is not None
    if server == "modelplane":
        return _modelplane_launch(config, model, port, work, serve_help)
    if server == "mlserver":
        return _mlserver_launch(config, model, port, work)
    if server == "bentoml":
        return _bentoml_launch(config, model, port, work)
    return _ray_launch(config, model, port, work)


def _modelplane_launch(config: str, model: Model, port: int, work: Path, serve_help: str) -> Launch:
    assert model.package_dir is not None
    argv = [str(MODELPLANE_BIN), "serve", str(model.package_dir), "--port", str(port)]
    argv += ["--replicas", "1"]
    if "--host" in serve_help:
        argv += ["--host", "127.0.0.1"]
    if config == "nobatch":
        argv += ["--max-batch-size", "1"]
    env = {"MODELPLANE_HOME": str(work / "modelplane-home")}
    return Launch(argv, f"/v2/models/{model.name}/infer", "v2", env)


def _mlserver_launch(config: str, model: Model, port: int, work: Path) -> Launch:
    repo = work / "mlserver" / f"{model.name}-{config}-{port}"
    (repo / model.name).mkdir(parents=True)
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    if config != "default":
        settings |= {"parallel_workers": 0, "debug": False}
    model_settings: dict[str, Any] = {
        "name": model.name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model.joblib_path)},
    }
    if config == "batch64":
        model_settings |= {"max_batch_size": 64, "max_batch_time": 0.002}
    (repo / "settings.json").write_text(json.dumps(settings))
    (repo / model.name / "model-settings.json").write_text(json.dumps(model_settings))
    argv = [str(VENVS / "mlserver" / "bin" / "mlserver"), "start", str(repo)]
    return Launch(argv, f"/v2/models/{model.name}/infer", "v2", cwd=repo)


def _bentoml_launch(config: str, model: Model, port: int, work: Path) -> Launch:
    folder = work / "bentoml"
    folder.mkdir(exist_ok=True)
    shutil.copy(PEER_APPS / "bentoml_service.py", folder / "bentoml_service.py")
    argv = [str(VENVS / "bentoml" / "bin" / "bentoml"), "serve", "bentoml_service:Predictor"]
    argv += ["--working-dir", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    env = {
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(work / "bentoml-home"),
        "MPBENCH_MODEL": str(model.joblib_path),
        "MPBENCH_BATCHABLE": "1" if config == "batchable" else "0",
        "MPBENCH_ACCESS_LOG": "1" if config == "default" else "0",
    }
    return Launch(argv, "/predict", "bento", env, cwd=folder)


def _ray_launch(config: str, model: Model, port: int, work: Path) -> Launch:
    argv = [str(VENVS / "ray" / "bin" / "python"), str(PEER_APPS / "ray_app.py")]
    argv += ["--port", str(port), "--model", str(model.joblib_path), "--name", model.name]
    argv += ["--config", config, "--temp-dir", str(work / f"ray{port}")]
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray's own traffic on loopback (see ray_app.py)
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return Launch(argv, "/", "v2", env)


def start(launch: Launch, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **launch.env}
    env.pop("VIRTUAL_ENV", None)
    with log.open("wb") as sink:
        return subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *launch.argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=launch.cwd,
            env=env,
            start_new_session=True,
        )


def post(port: int, path: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(
    proc: subprocess.Popen[bytes], port: int, launch: Launch, body: bytes, timeout: float, log: Path
) -> tuple[float, bytes]:
    """Seconds from process start to the first HTTP 200 on predict, and that answer."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise Failed(f"exited with {proc.returncode} before serving; {_tail(log)}")
        try:
            status, answer = post(port, launch.path, body, timeout=2.0)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return time.monotonic() - started, answer
            last = f"HTTP {status}: {answer[:200]!r}"
        time.sleep(0.02)
    raise Failed(f"no HTTP 200 on predict within {timeout:.0f}s (last: {last}); {_tail(log)}")


def check_answer(server: str, answer: bytes, label: int) -> str:
    """ "ok" if the first answer holds the label sklearn predicts for that row."""
    if server == "floor":
        return "ok"
    try:
        decoded = json.loads(answer)
    except ValueError:
        return f"not JSON: {answer[:80]!r}"
    if isinstance(decoded, list):
        candidates = [decoded]
    else:
        outputs = decoded.get("outputs", []) if isinstance(decoded, dict) else []
        candidates = [o.get("data", []) for o in outputs if isinstance(o, dict)]
    for data in candidates:
        if isinstance(data, list) and data and data[0] == label:
            return "ok"
    return f"expected label {label} in {answer[:120]!r}"


def _tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return "log tail: " + " | ".join(line.strip()[-200:] for line in text[-lines:])


# ---------------------------------------------------------------- one server


def bench_one(
    server: str,
    config: str,
    model: Model,
    opts: Options,
    work: Path,
    serve_help: str,
) -> Result:
    result = Result(server, config, "-" if server == "floor" else model.name)
    port = free_port()
    launch = launch_for(server, config, model, port, work, serve_help)
    log = work / "logs" / f"{server}-{config}-{result.model}.log"
    url = f"http://127.0.0.1:{port}{launch.path}"
    one_row = body_for(launch.body, model.rows[:1]).encode()
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = start(launch, log)
        timeout = STARTUP_TIMEOUT_S.get(server, DEFAULT_STARTUP_TIMEOUT_S)
        result.cold_start_s, answer = wait_ready(proc, port, launch, one_row, timeout, log)
        result.answer = answer[:300].decode(errors="replace")
        result.answer_check = check_answer(server, answer, model.labels[0])
        if result.answer_check != "ok":
            console.print(f"  [yellow]answer check[/]: {result.answer_check}")
        time.sleep(0.5)
        result.pss_mb_ready, _ = tree_pss_mb()
        console.print(
            f"  ready in {result.cold_start_s:.2f} s, PSS {result.pss_mb_ready:.0f} MB", style="dim"
        )
        plan = [(1, c) for c in opts.concurrency]
        if opts.batch_rows > 1:
            plan.append((opts.batch_rows, opts.batch_concurrency))
        for rows, conns in plan:
            script = write_script(work, launch.body, model.rows[:rows])
            run = measure(url, script, rows, conns, opts)
            result.runs.append(run)
            _print_run(run)
            if proc.poll() is not None:
                raise Failed(f"died under load (rc={proc.returncode}); {_tail(log)}")
        result.pss_mb_loaded, result.processes = tree_pss_mb()
    except (Failed, OSError, subprocess.SubprocessError) as exc:
        result.status, result.reason = "failed", str(exc)
        console.print(f"  [red]failed[/]: {exc}")
    finally:
        kill_tree(proc)
    return result


def _print_run(run: Run) -> None:
    console.print(
        f"  rows={run.rows:<3} c={run.concurrency:<3} {run.rps:>9.0f} req/s"
        f"  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:8.2f} ms  errors {run.errors}",
        style="dim",
    )


# ---------------------------------------------------------------- plan


def targets(only: Sequence[str]) -> list[tuple[str, str]]:
    """(server, config) pairs in run order, filtered by ``--only server[:config]``."""
    chosen: list[tuple[str, str]] = []
    for server, configs in CONFIGS.items():
        for config in configs:
            wanted = not only or server in only or f"{server}:{config}" in only
            if wanted:
                chosen.append((server, config))
    return chosen


def run_all(opts: Options, work: Path) -> list[Result]:
    models = build_models(opts.models, work)
    (work / "logs").mkdir()
    serve_help = modelplane_serve_help()
    results: list[Result] = []
    for server, config in targets(opts.only):
        for model in models.values():
            if server == "floor" and model is not next(iter(models.values())):
                continue
            label = f"[bold]{server}[/] {config}" + ("" if server == "floor" else f" {model.name}")
            reason = unavailable(server, config, model, serve_help)
            if reason:
                console.print(f"{label}: [yellow]skipped[/]: {reason}")
                shown = "-" if server == "floor" else model.name
                results.append(Result(server, config, shown, "skipped", reason))
                continue
            console.print(f"{label}: {CONFIGS[server][config]}")
            results.append(bench_one(server, config, model, opts, work, serve_help or ""))
    return results


# ---------------------------------------------------------------- report


def _best(results: list[Result], servers: Sequence[str], model: str, rows: int, c: int) -> Run:
    best = Run(rows, c)
    for result in results:
        if result.server in servers and result.model in (model, "-"):
            for run in result.runs:
                if (run.rows, run.concurrency) == (rows, c) and run.rps > best.rps:
                    best = run
    return best


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    """One row per measured run, with its ratios to the best peer and to the floor."""
    rows: list[dict[str, Any]] = []
    for result in results:
        for run in result.runs:
            model = result.model
            peer = _best(results, PEERS, model, run.rows, run.concurrency)
            floor = _best(results, ("floor",), model, run.rows, run.concurrency)
            rows.append(
                {
                    "server": result.server,
                    "config": result.config,
                    "model": model,
                    **asdict(run),
                    "vs_best_peer": run.rps / peer.rps if peer.rps else None,
                    "vs_floor": run.rps / floor.rps if floor.rps else None,
                }
            )
    return rows


def aims(results: list[Result], concurrency: int) -> list[dict[str, Any]]:
    """Issue 3's aims, per model: modelplane's best config at c=64 with one row per request."""
    checks: list[dict[str, Any]] = []
    for model in sorted({r.model for r in results if r.server == "modelplane"}):
        mine = _best(results, ("modelplane",), model, 1, concurrency)
        peer = _best(results, PEERS, model, 1, concurrency)
        floor = _best(results, ("floor",), model, 1, concurrency)
        if not mine.rps:
            continue
        colds = [r.cold_start_s for r in results if r.server == "modelplane" and r.model == model]
        cold = min((c for c in colds if c is not None), default=None)
        checks.append(
            {
                "model": model,
                "concurrency": concurrency,
                "x_best_peer": mine.rps / peer.rps if peer.rps else None,
                "x_best_peer_ok": bool(peer.rps) and mine.rps >= 5 * peer.rps,
                "p99_ms": mine.p99_ms,
                "best_peer_p99_ms": peer.p99_ms if peer.rps else None,
                "p99_ok": bool(peer.rps) and mine.p99_ms < peer.p99_ms,
                "x_floor": mine.rps / floor.rps if floor.rps else None,
                "x_floor_ok": bool(floor.rps) and mine.rps >= 0.35 * floor.rps,
                "cold_start_s": cold,
                "cold_start_ok": cold is not None and cold < 1.5,
            }
        )
    return checks


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_tables(results: list[Result], rows: list[dict[str, Any]]) -> None:
    table = Table(title="Throughput and latency (wrk, server on CPU 0, wrk on CPU 1)")
    for name in ("server", "config", "model", "rows", "c", "req/s", "pred/s", "p50 ms"):
        table.add_column(name, justify="left" if name in ("server", "config", "model") else "right")
    for name in ("p99 ms", "errors", "x best peer", "x floor"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            row["server"],
            row["config"],
            row["model"],
            str(row["rows"]),
            str(row["concurrency"]),
            f"{row['rps']:,.0f}",
            f"{row['preds_per_s']:,.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            str(row["errors"]),
            _fmt(row["vs_best_peer"], ".2f", "x"),
            _fmt(row["vs_floor"], ".3f"),
        )
    console.print(table)
    start_table = Table(title="Cold start (start to first 200 on predict) and memory (PSS, tree)")
    for name in ("server", "config", "model", "status", "cold start s", "PSS ready MB"):
        start_table.add_column(name)
    start_table.add_column("PSS loaded MB")
    start_table.add_column("procs")
    start_table.add_column("note")
    for r in results:
        start_table.add_row(
            r.server,
            r.config,
            r.model,
            r.status,
            _fmt(r.cold_start_s, ".2f"),
            _fmt(r.pss_mb_ready, ".0f"),
            _fmt(r.pss_mb_loaded, ".0f"),
            str(r.processes or "-"),
            (r.reason or ("" if r.answer_check in ("", "ok") else r.answer_check))[:70],
        )
    console.print(start_table)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    single = [r for r in rows if r["rows"] == 1]
    models = list(dict.fromkeys(r["model"] for r in single if r["model"] != "-")) or ["-"]
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4.5 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        series: dict[str, list[dict[str, Any]]] = {}
        for r in single:
            if r["model"] in (model, "-"):
                series.setdefault(f"{r['server']}:{r['config']}", []).append(r)
        for label, points in sorted(series.items()):
            points.sort(key=lambda r: r["concurrency"])
            xs = [p["concurrency"] for p in points]
            style = "--" if label.startswith("floor") else "-o"
            width = 2.5 if label.startswith("modelplane") else 1.2
            axes[i][0].plot(xs, [p["rps"] for p in points], style, label=label, lw=width)
            axes[i][1].plot(xs, [p["p99_ms"] for p in points], style, label=label, lw=width)
        for ax, what in zip(axes[i], ("req/s", "p99 latency (ms)"), strict=True):
            ax.set(xscale="log", yscale="log", xlabel="concurrency", ylabel=what)
            ax.set_xticks(sorted({r["concurrency"] for r in single}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_title(f"{model}: {what}, one row per request")
            ax.grid(True, which="both", alpha=0.3)
        axes[i][1].legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(opts: Options, results: list[Result], quick: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    rows = ratios(results)
    print_tables(results, rows)
    if not rows:
        console.print("nothing measured: results left as they were")
        return
    checks = aims(results, max(opts.concurrency))
    for check in checks:
        console.print(_aims_line(check))
    document = {
        "meta": _meta(opts, quick),
        "configs": CONFIGS,
        "servers": [asdict(r) for r in results],
        "runs": rows,
        "aims": checks,
    }
    out = RESULTS / "serving.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    if rows:
        plot(rows, RESULTS / "serving.png")
    console.print(f"wrote {out}" + (f" and {RESULTS / 'serving.png'}" if rows else ""))


def _aims_line(check: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "[green]met[/]" if ok else "[red]missed[/]"

    return (
        f"issue 3 aims, {check['model']} at c={check['concurrency']}: "
        f"{_fmt(check['x_best_peer'], '.1f', 'x')} best peer (>= 5x) "
        f"{mark(check['x_best_peer_ok'])}; "
        f"p99 {check['p99_ms']:.1f} ms vs {_fmt(check['best_peer_p99_ms'], '.1f', ' ms')} "
        f"{mark(check['p99_ok'])}; {_fmt(check['x_floor'], '.2f')} of floor (>= 0.35) "
        f"{mark(check['x_floor_ok'])}; cold start {_fmt(check['cold_start_s'], '.2f', ' s')} "
        f"(< 1.5 s) {mark(check['cold_start_ok'])}"
    )


def _meta(opts: Options, quick: bool) -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "",
        "peers": peer_versions(),
        "quick": quick,
        "method": (
            f"server tree pinned to CPU {SERVER_CPU}, wrk -t1 on CPU {WRK_CPU}; "
            f"{opts.warmup}s warm-up then {opts.duration}s measured per concurrency; "
            "cold start = process start to first HTTP 200 on predict; PSS summed over tree"
        ),
        **{k: v for k, v in asdict(opts).items() if k != "only"},
    }


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up seconds per run")
    parser.add_argument("--concurrency", default="1,16,64", help="comma list of connections")
    parser.add_argument("--batch-rows", type=int, default=64, help="rows per batch run; 0: off")
    parser.add_argument("--batch-concurrency", type=int, default=16)
    parser.add_argument("--models", default="logreg,hgb", help="logreg,hgb")
    parser.add_argument("--only", default="", help="servers or server:config, comma separated")
    parser.add_argument("--setup", action="store_true", help="create the peer venvs, then stop")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, 1 s warm-up")
    parser.add_argument("--keep-work", action="store_true", help="keep models, configs, logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3, 1
    opts = Options(
        duration=args.duration,
        warmup=args.warmup,
        concurrency=tuple(int(c) for c in args.concurrency.split(",") if c),
        batch_rows=args.batch_rows,
        batch_concurrency=args.batch_concurrency,
        models=tuple(m for m in args.models.split(",") if m),
        only=tuple(o for o in args.only.split(",") if o),
    )
    unknown = [m for m in opts.models if m not in ("logreg", "hgb")]
    unknown += [o for o in opts.only if o.split(":")[0] not in CONFIGS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    return args, opts


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mpbench-serving-"))
    try:
        yield path
    finally:
        if keep:
            console.print(f"work files kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args, opts = parse_args(argv)
    if args.setup:
        setup()
        return 0
    if shutil.which("wrk") is None:
        console.print("[red]wrk not found[/]: run with --setup (apt-get install -y wrk)")
        return 2
    become_subreaper()
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(WRK_CPU)})
    expected = len(opts.concurrency) + (opts.batch_rows > 1)
    estimate = expected * (opts.duration + opts.warmup) * len(targets(opts.only)) * len(opts.models)
    console.print(f"about {math.ceil(estimate / 60)} min of load, plus server start-ups")
    results: list[Result] = []
    with workdir(args.keep_work) as work:
        try:
            results = run_all(opts, work)
        except KeyboardInterrupt:
            console.print("[red]interrupted[/]: stopping servers")
            return 130
        finally:
            kill_tree(None)
    write_results(opts, results, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

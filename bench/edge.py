"""Edge benchmark: does one endpoint keep its latency while another receives 50 MB requests?

A gateway (its own process, `serve_endpoints`) serves one ONNX model as two endpoints, A and
B. A closed-loop client sends one-row requests to A, first alone, then while 8 senders push
50 MB JSON requests (640,000 rows each) to B. B's requests are decoded in full and then
answered 413 (over the default 10,000 rows per request), so what they cost is the body and
its decoding, which is what used to stall every endpoint. Gateway RSS is sampled throughout
(before, peak, and 7 s after the burst, once idle decode helpers have stopped), and that of
the gateway's children (model workers and decode helpers) apart.

Two modes in one run, each on a fresh gateway: ``offload`` (the default edge: large bodies
decoded in a helper process, two at a time) and ``inplace`` (offloading and admission turned
off, as before: every body decoded on the shared event loop).

    .venv/bin/python bench/edge.py [--senders 8] [--per-sender 2] [--idle-s 3]

Writes ``bench/results/edge.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

__all__ = ["main"]

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ROWS = 640_000
FEATURES = 4
console = Console(width=140)


# ---------------------------------------------------------------- the gateway process


def _package(root: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from modelplane.registry.build import package

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, FEATURES)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    onnx = to_onnx(model, x[:1], options={"zipmap": False})
    return package(onnx, name="lr", output_dir=root / "lr", sample_input=x[:4]).path


def _serve(mode: str, package_dir: Path, port_file: Path) -> None:
    from modelplane.cli.serve import endpoint_for
    from modelplane.dataplane.edge import EdgeConfig
    from modelplane.dataplane.endpoint_runtime import EndpointConfig, ModelSource
    from modelplane.dataplane.gateway import GatewayConfig
    from modelplane.dataplane.server import bound_port, serve_endpoints
    from modelplane.registry.digest import verify_package

    verified = verify_package(package_dir)
    source = ModelSource("lr:1", package_dir, verified.manifest, verified.digest)
    configs = [
        EndpointConfig(endpoint_for(source.label, source, name=name), {source.label: source})
        for name in ("a", "b")
    ]
    edge = EdgeConfig()
    if mode == "inplace":
        edge = EdgeConfig(offload_bytes=1 << 62, max_large_bodies=1 << 20)
    config = GatewayConfig(edge=edge, max_body_bytes=96 << 20)

    def ready(server: Any) -> None:
        port_file.write_text(str(bound_port(server)))

    serve_endpoints(configs, port=0, config=config, on_ready=ready)


# ---------------------------------------------------------------- measuring


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


class Sampler(threading.Thread):
    """RSS of the gateway and of its children, every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            children = sum(_rss_kb(p) for p in _descendants(self.pid))
            self.samples.append((time.monotonic(), _rss_kb(self.pid), children))


def _small_loop(
    url: str, body: bytes, until: threading.Event, out: list[float], failed: list[int]
) -> None:
    with httpx.Client(base_url=url, timeout=60.0) as client:
        while not until.is_set():
            started = time.perf_counter()
            response = client.post("/v2/models/a/infer", content=body)
            if response.status_code == 200:
                out.append(time.perf_counter() - started)
            else:
                failed.append(response.status_code)


def _big_sender(url: str, body: bytes, count: int, out: list[tuple[int, float]]) -> None:
    with httpx.Client(base_url=url, timeout=300.0) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post("/v2/models/b/infer", content=body)
            out.append((response.status_code, time.perf_counter() - started))


def _burst(url: str, name: str, senders: int, per_sender: int, out_file: Path) -> None:
    """The big senders, in a process of their own so the client measuring A keeps its GIL:
    builds the body, says ``ready`` on stdout, starts on a line from stdin."""
    from modelplane.dataplane.codec_v2 import encode_request

    rng = np.random.default_rng(1)
    big = encode_request({name: rng.normal(size=(ROWS, FEATURES)).astype(np.float32)}).body
    print(len(big), flush=True)
    sys.stdin.readline()
    results: list[tuple[int, float]] = []
    threads = [
        threading.Thread(target=_big_sender, args=(url, big, per_sender, results))
        for _ in range(senders)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out_file.write_text(json.dumps({"results": results, "burst_s": time.monotonic() - started}))


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ms = np.array(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def _run_mode(mode: str, package_dir: Path, name: str, small: bytes, args: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode, str(package_dir), str(port_file)]
        )
        try:
            deadline = time.monotonic() + 120
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {mode} gateway did not start")
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            with httpx.Client(base_url=url) as client:
                for _ in range(50):
                    client.post("/v2/models/a/infer", content=small).raise_for_status()
            sampler = Sampler(proc.pid)
            sampler.start()
            time.sleep(0.2)
            before_kb = _rss_kb(proc.pid)
            children_before_kb = sum(_rss_kb(p) for p in _descendants(proc.pid))

            idle: list[float] = []
            idle_failed: list[int] = []
            done = threading.Event()
            runner = threading.Thread(
                target=_small_loop, args=(url, small, done, idle, idle_failed)
            )
            runner.start()
            time.sleep(args.idle_s)
            done.set()
            runner.join()

            out_file = Path(tmp) / "burst.json"
            burst = subprocess.Popen(
                [sys.executable, __file__, "--burst", url, name, str(args.senders),
                 str(args.per_sender), str(out_file)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert burst.stdin is not None
            assert burst.stdout is not None
            big_bytes = int(burst.stdout.readline())
            loaded: list[float] = []
            loaded_failed: list[int] = []
            done = threading.Event()
            runner = threading.Thread(
                target=_small_loop, args=(url, small, done, loaded, loaded_failed)
            )
            runner.start()
            burst.stdin.write("go\n")
            burst.stdin.flush()
            burst.wait(600)
            done.set()
            runner.join()
            burst_result = json.loads(out_file.read_text())
            bigs = [(int(status), float(s)) for status, s in burst_result["results"]]
            burst_s = float(burst_result["burst_s"])
            time.sleep(args.settle_s)
            after_kb = _rss_kb(proc.pid)
            children_after_kb = sum(_rss_kb(p) for p in _descendants(proc.pid))
            sampler.stop.set()
            sampler.join()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    statuses: dict[str, int] = {}
    for status, _ in bigs:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "mode": mode,
        "a_alone": {**_quantiles(idle), "failed": len(idle_failed)},
        "a_during_burst": {
            **_quantiles(loaded),
            "failed": len(loaded_failed),
            "failed_statuses": sorted(set(loaded_failed)),
        },
        "big_requests": {
            "bytes": big_bytes,
            "n": len(bigs),
            "statuses": statuses,
            "mean_s": round(float(np.mean([s for _, s in bigs])), 2) if bigs else None,
            "burst_s": round(burst_s, 2),
        },
        "gateway_rss_mb": {
            "before": round(before_kb / 1024, 1),
            "peak": round(max(s[1] for s in sampler.samples) / 1024, 1),
            "after": round(after_kb / 1024, 1),
        },
        "children_rss_mb": {
            "before": round(children_before_kb / 1024, 1),
            "peak": round(max(s[2] for s in sampler.samples) / 1024, 1),
            "after": round(children_after_kb / 1024, 1),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--per-sender", type=int, default=2)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument(
        "--settle-s", type=float, default=7.0, help="wait after the burst before 'after'"
    )
    parser.add_argument("--modes", default="offload,inplace")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--burst", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve[0], Path(args.serve[1]), Path(args.serve[2]))
        return
    if args.burst:
        url, name, senders, per_sender, out_file = args.burst
        _burst(url, name, int(senders), int(per_sender), Path(out_file))
        return

    from modelplane.dataplane.codec_v2 import encode_request
    from modelplane.registry.digest import verify_package

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        package_dir = _package(Path(tmp))
        name = verify_package(package_dir).manifest.signature.inputs[0].name
        rng = np.random.default_rng(1)
        small = encode_request({name: rng.normal(size=(1, FEATURES)).astype(np.float32)}).body
        for mode in args.modes.split(","):
            runs.append(_run_mode(mode, package_dir, name, small, args))
    big_mb = runs[0]["big_requests"]["bytes"] / 1e6

    table = Table(title=f"A's one-row latency while B takes {args.senders}x{args.per_sender} "
                  f"requests of {big_mb:.1f} MB ({ROWS:,} rows)")  # fmt: skip
    for column in ("mode", "A alone p50/p99 ms", "A in burst p50/p99/max ms", "A ok/failed",
                   "B statuses", "burst s", "gateway RSS MB before/peak/after",
                   "children MB before/peak/after"):  # fmt: skip
        table.add_column(column)
    for run in runs:
        alone, busy, rss = run["a_alone"], run["a_during_burst"], run["gateway_rss_mb"]
        table.add_row(
            run["mode"],
            f"{alone['p50_ms']}/{alone['p99_ms']}",
            f"{busy['p50_ms']}/{busy['p99_ms']}/{busy['max_ms']}",
            f"{busy['n']}/{busy['failed']}",
            json.dumps(run["big_requests"]["statuses"]),
            str(run["big_requests"]["burst_s"]),
            f"{rss['before']}/{rss['peak']}/{rss['after']}",
            "/".join(str(v) for v in run["children_rss_mb"].values()),
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    result = {
        "bench": "edge",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_1m_at_end": os.getloadavg()[0],
        },
        "big_request": {"rows": ROWS, "bytes": runs[0]["big_requests"]["bytes"]},
        "senders": args.senders,
        "per_sender": args.per_sender,
        "runs": runs,
    }
    (RESULTS / "edge.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

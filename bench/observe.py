"""What observing costs: traces on the gateway, and how fast outcomes (feedback) are taken in.

Sections (each a key of ``bench/results/observe.json``):

1. ``tracing``: one gateway (``ServerThread``, in this process) serving an ONNX logistic
   regression, loaded by a closed-loop client process at ``--concurrency`` (64) with one
   row per request (V2 JSON). The same gateway and workers serve every mode; the tracer is
   switched between runs, which rotate so drift in the machine's load hits each alike:

   - ``off``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` unset, what everyone runs (``tracer`` is
     ``None``: one test per request, no OpenTelemetry import);
   - ``on_no_exporter``: the SDK configured, exporting nowhere
     (``OTEL_TRACES_EXPORTER=none``): each request's sampling decision, and no span built,
     since nothing would receive it (the issue's aim: within 3% of ``off``);
   - ``spans_discarded``: every request's seven spans built and handed to a span processor
     that drops them: what making spans costs, before any export;
   - ``otlp``: every request's spans exported over OTLP/HTTP to a local receiver (the
     tests' receiver, ``tests/kit/otlp.py``, run as a process);
   - ``otlp_1pct``: the same with ``parentbased_traceidratio`` at 1 %, as a busy
     production gateway would run.

   Throughput (req/s) and the gateway's CPU time per request (this process's, which is
   the gateway's event loop, the span processor's thread and nothing else: the client,
   the receiver and the model workers are other processes) for each, and each mode's ratio
   to ``off``. Aim: ``off`` costs nothing measurable.
2. ``off_hooks``: what tracing adds to a request while off, statement for statement (the
   header list kept, two ``is not None`` tests and two of a local flag, five more fields in
   the request's trace object), timed against the same without, as a share of ``off``'s
   CPU per request: the ratio of ``off`` to a gateway without tracing code, which no
   throughput run resolves.
3. ``record_cost``: one request's tracing in process, best of five: sampled out, seven spans
   built, and their OTLP encoding (the exporter thread's work), each in microseconds.
4. ``feedback``: outcomes taken in, rows per second: ``OutcomeStore.ingest`` in process
   (batches of 1,000, SQLite and PostgreSQL when reachable), and end to end through the
   gateway's ``POST /v1/endpoints/{e}:feedback`` (1,000 outcomes per request, parsed and
   stored) on SQLite.

Run from the repository root:

    .venv/bin/python bench/observe.py            # ~2 minutes
    .venv/bin/python bench/observe.py --quick    # ~40 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

# run as a script, only bench/ is on sys.path; bench._common lives under the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import latency_summary, load_client, lr_endpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "observe.json"
MODES = ("off", "on_no_exporter", "spans_discarded", "otlp", "otlp_1pct")
POSTGRES_ADMIN = os.environ.get(
    "MODELPLANE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class Mode:
    warmup_s: float
    run_s: float
    repeats: int
    concurrency: int
    feedback_rows: int


FULL = Mode(warmup_s=2.0, run_s=3.0, repeats=6, concurrency=64, feedback_rows=100_000)
QUICK = Mode(warmup_s=1.0, run_s=2.0, repeats=2, concurrency=64, feedback_rows=20_000)


# ---------------------------------------------------------------- tracing


@contextlib.contextmanager
def _receiver_process() -> Iterator[str]:
    """The tests' OTLP/HTTP receiver as a process of its own; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.otlp", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "listening on ..." once bound
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _tracers(receiver: str) -> dict[str, Any]:
    """Each mode's tracer, built as :func:`modelplane.dataplane.tracing.from_environment`
    builds it from the environment the mode stands for."""
    from modelplane.dataplane.tracing import from_environment

    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_SERVICE_NAME": "bench-gateway"}
    environments = {
        "on_no_exporter": {**base, "OTEL_TRACES_EXPORTER": "none"},
        "otlp": base,
        "otlp_1pct": {
            **base,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        },
    }
    tracers: dict[str, Any] = {"off": None}
    for name, env in environments.items():
        # the SDK and the exporter read os.environ themselves: set it while each is built
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            tracers[name] = from_environment()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    tracers["spans_discarded"] = _discarding_tracer()
    return tracers


class _Discard:
    """A span processor that drops every span it is handed."""

    def on_end(self, span: Any) -> None:
        pass

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        return True


def _discarding_tracer() -> Any:
    from opentelemetry.sdk.trace import TracerProvider

    from modelplane.dataplane.tracing import RequestTracer

    return RequestTracer(TracerProvider(), _Discard())


def _spans_received(receiver: str) -> int:
    return int(httpx.get(f"{receiver}/count", timeout=5.0).json()["spans"])


def _summary(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    summary = latency_summary(runs)
    cpu_s = sum(r["gateway_cpu_s"] for r in runs)
    return summary | {"cpu_us_per_request": cpu_s / max(1, summary["requests"]) * 1e6}


def bench_tracing(mode: Mode, console: Console) -> dict[str, Any]:
    from modelplane.dataplane.gateway import GatewayConfig
    from modelplane.dataplane.server import ServerThread

    env_endpoint = os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in MODES}
    spans: dict[str, int] = dict.fromkeys(MODES, 0)
    with tempfile.TemporaryDirectory(prefix="modelplane-observe-bench-") as tmp, \
            _receiver_process() as receiver:  # fmt: skip
        tracers = _tracers(receiver)
        with ServerThread([lr_endpoint(Path(tmp))], config=GatewayConfig(seed=7)) as server:
            url = f"{server.url}/v2/models/lr/infer"
            gateway = server.gateway
            for name in MODES:
                gateway.tracer = tracers[name]
                load_client(url, mode.concurrency, mode.warmup_s)
            for repeat in range(mode.repeats):
                # rotate the order so that no mode always runs first (or after another)
                order = MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]
                for name in order:
                    gateway.tracer = tracers[name]
                    # what the previous mode left in flight is counted before this run
                    before = _flushed_count(tracers.values(), receiver)
                    cpu = time.process_time()
                    run = load_client(url, mode.concurrency, mode.run_s)
                    # the spans of this run are exported (and their CPU spent) before the
                    # clock stops: what a run's requests cost includes their export
                    spans[name] += _flushed_count([tracers[name]], receiver) - before
                    run["gateway_cpu_s"] = time.process_time() - cpu
                    runs[name].append(run)
                console.log(f"tracing round {repeat + 1}/{mode.repeats}")
            gateway.tracer = None
        for tracer in tracers.values():
            if tracer is not None:
                tracer.shutdown()
    if env_endpoint is not None:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = env_endpoint
    point: dict[str, Any] = {name: _summary(r) for name, r in runs.items()}
    off = point["off"]
    point["ratio_to_off"] = {
        name: {
            "rps": point[name]["rps"] / off["rps"],
            "cpu_us_per_request": point[name]["cpu_us_per_request"] / off["cpu_us_per_request"],
            "p99_ms": point[name]["p99_ms"] / off["p99_ms"],
        }
        for name in MODES
    }
    per_run = {name: [_summary([one])["rps"] for one in r] for name, r in runs.items()}
    point["per_run_rps"] = per_run
    point["paired_rps_ratio_to_off"] = {
        name: float(np.median([a / b for a, b in zip(per_run[name], per_run["off"], strict=True)]))
        for name in MODES
    }
    point["spans_exported"] = spans
    return {
        "concurrency": mode.concurrency,
        "run_s": mode.run_s,
        "repeats": mode.repeats,
        "aim": "tracing off costs nothing measurable; on-without-exporter within 3% of off",
        **point,
    }


def _flushed_count(tracers: Iterable[Any], receiver: str) -> int:
    """Spans the receiver holds once ``tracers`` have exported what they buffered."""
    for tracer in tracers:
        if tracer is not None:
            tracer.force_flush(30_000)
    return _spans_received(receiver)


def bench_off_hooks(calls: int = 1_000_000) -> dict[str, Any]:
    """What tracing costs a request while it is off, statement for statement: the header
    list kept by the scan, two ``is not None`` tests and two of a local flag, and five
    more fields in the request's trace object (its dataclass ``__init__``), against the
    same without them. The throughput runs cannot show a cost this small; this can."""
    import dataclasses
    import timeit

    @dataclasses.dataclass(slots=True)
    class Before:
        request_id: str
        a: float = 0.0
        b: float = 0.0
        c: float = 0.0
        d: float = 0.0
        e: float = 0.0
        f: Any = None
        g: Any = None
        h: Any = None
        i: Any = None
        j: Any = None

    @dataclasses.dataclass(slots=True)
    class After(Before):
        headers: Any = None
        decoded_at: float = 0.0
        answered_at: float = 0.0
        join_started_at: float = 0.0
        joined_at: float = 0.0

    class Gateway:
        __slots__ = ("tracer",)

        def __init__(self) -> None:
            self.tracer: Any = None

    gateway, headers = Gateway(), [(b"host", b"x")]

    def before() -> None:
        Before("")

    def after() -> None:
        request = After("")
        request.headers = headers
        tracing = gateway.tracer is not None
        if tracing:
            request.decoded_at = 1.0
        if tracing:
            request.answered_at = 1.0
        if gateway.tracer is not None:
            return

    best = {"before": math.inf, "after": math.inf}
    for _ in range(5):  # the best of five: the machine is shared
        for name, call in (("before", before), ("after", after)):
            best[name] = min(best[name], timeit.timeit(call, number=calls) / calls * 1e9)
    return {"calls": calls, "ns_before": best["before"], "ns_after": best["after"],
            "ns_added": best["after"] - best["before"]}  # fmt: skip


def bench_record_cost(calls: int = 20_000) -> dict[str, Any]:
    """One request's tracing, in process and without HTTP: ``RequestTracer.record`` for a
    request sampled out, for one sampled without an exporter (no span built), for one
    sampled whose seven spans are built and handed to a processor that drops them, and the OTLP
    exporter's encoding of those seven spans (the exporter thread's share). Best of five:
    the machine is shared."""
    import timeit
    from types import SimpleNamespace

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    from modelplane.dataplane.tracing import RequestTracer
    from modelplane.observe.records import BatchTiming, RequestTrace

    runtime: Any = SimpleNamespace(name="lr", endpoint=SimpleNamespace(team="bench"))
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", b"120"), (b"user-agent", b"bench")]  # fmt: skip
    kept: list[Any] = []

    class Keep:  # a span processor that holds the spans for the encoding measure
        def on_end(self, span: Any) -> None:
            if len(kept) < 7:
                kept.append(span)

    def request() -> RequestTrace:
        trace = RequestTrace(started_at=1.0, enqueued_at=1.0002)
        trace.batch = BatchTiming(1.0003, 4)
        trace.batch.returned_at = 1.0010
        return trace

    def timed(tracer: RequestTracer) -> float:
        def call() -> None:
            tracer.record(request(), runtime, "bench-1", decoded_at=1.0001, answered_at=1.0011,
                          status=200, model_version="lr:1", route="lr:1", headers=headers,
                          ended_at=1.0012)  # fmt: skip

        return min(timeit.repeat(call, number=calls, repeat=5)) / calls * 1e6

    dropped = timed(RequestTracer(TracerProvider(sampler=ALWAYS_OFF), None))
    no_exporter = timed(RequestTracer(TracerProvider(sampler=ALWAYS_ON), None))
    built = timed(RequestTracer(TracerProvider(sampler=ALWAYS_ON), _Discard()))
    timed(RequestTracer(TracerProvider(sampler=ALWAYS_ON), Keep()))
    rounds = max(1, calls // 20)
    encode = min(
        timeit.repeat(lambda: encode_spans(kept).SerializeToString(), number=rounds, repeat=5)
    )
    return {
        "sampled_out_us": dropped,
        "sampled_no_exporter_us": no_exporter,
        "seven_spans_built_us": built,
        "otlp_encoding_of_seven_spans_us": encode / rounds * 1e6,
    }


# ---------------------------------------------------------------- feedback


def _feedback_items(rows: int) -> list[Any]:
    from modelplane.observe.outcomes import Feedback

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, rows)
    return [Feedback(f"req-{i}", float(labels[i])) for i in range(rows)]


def _ingest_rate(url: str, rows: int) -> dict[str, Any]:
    from modelplane.observe.outcomes import OutcomeStore
    from modelplane.store.db import open_engine

    engine = open_engine(url)
    try:
        store = OutcomeStore(engine)
        items = _feedback_items(rows)
        began = time.perf_counter()
        stored = store.ingest_many("lr", items, source="bench")
        elapsed = time.perf_counter() - began
        # again: every key exists now, so each row is an update (a label corrected)
        began = time.perf_counter()
        store.ingest_many("lr", items, source="bench")
        again = time.perf_counter() - began
    finally:
        engine.dispose()
    return {"rows": stored, "rows_per_s": stored / elapsed, "update_rows_per_s": stored / again}


@contextlib.contextmanager
def _postgres_database() -> Iterator[str | None]:
    try:
        import psycopg
    except ImportError:
        yield None
        return
    admin = POSTGRES_ADMIN.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"mp_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        yield None
        return
    base, _, _ = POSTGRES_ADMIN.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _http_feedback_rate(mode: Mode) -> dict[str, Any]:
    from modelplane.dataplane.gateway import GatewayConfig
    from modelplane.dataplane.server import ServerThread
    from modelplane.observe.outcomes import OutcomeStore
    from modelplane.store.db import open_engine

    per_request = 1000
    requests = mode.feedback_rows // per_request
    with tempfile.TemporaryDirectory(prefix="modelplane-observe-feedback-") as tmp:
        work = Path(tmp)
        engine = open_engine(f"sqlite:///{work}/state.db")
        server = ServerThread([lr_endpoint(work)], config=GatewayConfig(seed=7))
        server.gateway.feedback = OutcomeStore(engine)
        bodies = [
            json.dumps(
                {
                    "outcomes": [
                        {"request_id": f"r{n}-{i}", "label": i % 2} for i in range(per_request)
                    ]
                }
            ).encode()
            for n in range(requests)
        ]
        with server, httpx.Client(base_url=server.url, timeout=30.0) as client:
            url = "/v1/endpoints/lr:feedback"
            began = time.perf_counter()
            for body in bodies:
                answer = client.post(url, content=body)
                if answer.status_code != 200:
                    raise RuntimeError(f"feedback answered {answer.status_code}: {answer.text}")
            elapsed = time.perf_counter() - began
        engine.dispose()
    rows = requests * per_request
    return {"rows": rows, "rows_per_request": per_request, "rows_per_s": rows / elapsed}


def bench_feedback(mode: Mode, console: Console) -> dict[str, Any]:
    section: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="modelplane-observe-ingest-") as tmp:
        section["ingest_sqlite"] = _ingest_rate(f"sqlite:///{tmp}/state.db", mode.feedback_rows)
    console.log("feedback: SQLite ingest done")
    with _postgres_database() as url:
        section["ingest_postgres"] = (
            _ingest_rate(url, mode.feedback_rows) if url else {"skipped": "PostgreSQL unreachable"}
        )
    console.log("feedback: PostgreSQL ingest done")
    section["http_sqlite"] = _http_feedback_rate(mode)
    console.log("feedback: HTTP done")
    return section


# ---------------------------------------------------------------- report


def _table(results: dict[str, Any]) -> Table:
    tracing = results["tracing"]
    table = Table(title="observe: what tracing costs the gateway (ratios to off)")
    for column in ("mode", "req/s", "ratio", "paired", "CPU us/req", "ratio", "p99 ms", "spans"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for name in MODES:
        point, ratio = tracing[name], tracing["ratio_to_off"][name]
        table.add_row(
            name,
            f"{point['rps']:.0f}",
            f"{ratio['rps']:.3f}",
            f"{tracing['paired_rps_ratio_to_off'][name]:.3f}",
            f"{point['cpu_us_per_request']:.1f}",
            f"{ratio['cpu_us_per_request']:.3f}",
            f"{point['p99_ms']:.1f}",
            str(tracing["spans_exported"][name]),
        )
    return table


def _feedback_table(section: dict[str, Any]) -> Table:
    table = Table(title="observe: feedback ingestion")
    for column in ("path", "rows", "rows/s", "update rows/s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, point in section.items():
        if "skipped" in point:
            table.add_row(name, "-", point["skipped"], "-")
            continue
        update = point.get("update_rows_per_s")
        table.add_row(name, str(point["rows"]), f"{point['rows_per_s']:.0f}",
                      f"{update:.0f}" if update else "-")  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    console = Console()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # a shared machine: what else ran says how far to trust the req/s ratios
            "load_average_at_start": os.getloadavg(),
        },
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results["tracing"] = bench_tracing(mode, console)
    hooks = results["off_hooks"] = bench_off_hooks(200_000 if args.quick else 1_000_000)
    off_cpu_ns = results["tracing"]["off"]["cpu_us_per_request"] * 1000
    hooks["share_of_off_cpu_per_request"] = hooks["ns_added"] / off_cpu_ns
    record = results["record_cost"] = bench_record_cost(5_000 if args.quick else 20_000)
    console.print(_table(results))
    console.print(
        f"one request's tracing in process: sampled out {record['sampled_out_us']:.1f} us, "
        f"sampled without an exporter {record['sampled_no_exporter_us']:.1f} us, "
        f"seven spans built {record['seven_spans_built_us']:.1f} us, their OTLP encoding "
        f"{record['otlp_encoding_of_seven_spans_us']:.1f} us (the exporter's thread)"
    )
    console.print(
        f"tracing off adds {hooks['ns_added']:.0f} ns to a request "
        f"({hooks['share_of_off_cpu_per_request']:.4%} of the gateway's CPU per request, "
        f"{results['tracing']['off']['cpu_us_per_request']:.0f} us): off vs no tracing code "
        f"{1 - hooks['share_of_off_cpu_per_request']:.4f}"
    )
    results["feedback"] = bench_feedback(mode, console)
    console.print(_feedback_table(results["feedback"]))
    results["machine"]["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

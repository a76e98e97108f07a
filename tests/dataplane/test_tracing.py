"""Traces of real requests through a real gateway, received by a real OTLP/HTTP receiver."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit import cli, free_port, wait_for
from tests.kit.otlp import OtlpReceiver, ReceivedSpan

from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.endpoint_runtime import EndpointConfig
from modelplane.dataplane.server import ServerThread
from modelplane.dataplane.tracing import RequestTracer, from_environment, tracing_requested
from modelplane.features.stores import open_online_store
from modelplane.observe.records import BatchTiming, RequestTrace
from modelplane.spec.endpoint import FeatureBinding

pytestmark = pytest.mark.timeout(120)
fm = kit.fake_models

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVER, ERROR = 2, 2  # SpanKind.SERVER and StatusCode.ERROR in OTLP


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "fraud-gateway")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        yield receiver


def _post(client: httpx.Client, first: float, request_id: str, **headers: str) -> httpx.Response:
    body = encode_request(kit.echo_inputs(1, first=first)).body
    return client.post(
        "/v2/models/echo/infer", content=body, headers={"x-request-id": request_id, **headers}
    )


def _by_request(spans: list[ReceivedSpan], request_id: str) -> dict[str, ReceivedSpan]:
    (root,) = [s for s in spans if s.attributes.get("modelplane.request_id") == request_id]
    tree = {s.name: s for s in spans if s.trace_id == root.trace_id and s is not root}
    return {"root": root, **tree}


def _within(child: ReceivedSpan, parent: ReceivedSpan) -> bool:
    return parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns


def test_a_request_is_a_tree_of_spans_under_the_callers_trace(receiver: OtlpReceiver) -> None:
    endpoint = kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract("echo")).build()
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with ServerThread([endpoint], config=kit.gateway_config()) as server:
        assert server.gateway.tracer is not None
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            assert _post(client, 1.0, "ok-1", traceparent=traceparent).status_code == 200
            assert _post(client, fm.RAISE, "err-1").status_code == 503
            records = client.post(
                "/v1/endpoints/echo:predict",
                json={"instances": [{"x": [1, 2, 3, 4], "n": 1, "s": "a", "b": True}]},
                headers={"x-request-id": "rec-1"},
            )
            assert records.status_code == 200, records.text
        wait_for(lambda: len(receiver.received()) >= 3 * 6, 10.0, "the spans of 3 requests")
    spans = receiver.received()

    ok = _by_request(spans, "ok-1")
    root = ok["root"]
    assert root.name == "POST /v2/models/{model}/infer"
    assert root.kind == SERVER
    assert (root.trace_id, root.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert root.attributes == {
        "http.request.method": "POST",
        "http.route": "/v2/models/{model}/infer",
        "url.path": "/v2/models/echo/infer",
        "http.response.status_code": 200,
        "modelplane.request_id": "ok-1",
        "modelplane.endpoint": "echo",
        "modelplane.team": root.attributes["modelplane.team"],
        "modelplane.route_kind": "stable",
        "modelplane.model_version": "echo:1",
        "modelplane.route": "echo:1",
    }
    assert root.resource["service.name"] == "fraud-gateway"
    assert {"decode", "validate", "batch", "queue", "compute", "encode"} <= set(ok)
    for name in ("decode", "validate", "batch", "encode"):
        assert ok[name].parent_span_id == root.span_id, name
        assert _within(ok[name], root), name
    for name in ("queue", "compute"):
        assert ok[name].parent_span_id == ok["batch"].span_id, name
        assert _within(ok[name], ok["batch"]), name
    assert ok["compute"].attributes == {"modelplane.batch.rows": 1}
    # the stages follow one another: decode, validate, batch (queue then compute), encode
    order = [ok[n] for n in ("decode", "validate", "queue", "compute", "encode")]
    assert all(a.end_ns <= b.start_ns for a, b in itertools.pairwise(order))
    assert any(h.get("x-tenant") == "blue" for h in receiver.headers)

    err = _by_request(spans, "err-1")["root"]
    assert err.parent_span_id == ""  # no traceparent: a trace of its own
    assert err.attributes["http.response.status_code"] == 503
    assert err.attributes["error.type"] == "worker_failed"
    assert err.attributes["modelplane.model_version"] == "echo:1"
    assert err.status_code == ERROR
    assert "negative two" in err.status_message
    assert "encode" not in _by_request(spans, "err-1")

    rec = _by_request(spans, "rec-1")["root"]
    assert rec.name == "POST /v1/endpoints/{endpoint}:predict"
    assert rec.attributes["url.path"] == "/v1/endpoints/echo:predict"


CUSTOMERS = kit.customers(version=1)


def test_a_feature_join_is_a_span_naming_its_sets(receiver: OtlpReceiver, tmp_path: Path) -> None:
    store = open_online_store(f"sqlite:///{tmp_path}/features.db")
    store.write("customers", 1, [("stale", time.time() - 600, {"n": 2})])
    builder = kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract("echo"))
    binding = FeatureBinding(feature_set="customers:1", entity_key="customer_id", policy="default")
    builder.settings["features"] = (binding,)
    built = builder.build()
    endpoint = EndpointConfig(built.endpoint, built.models, {"customers:1": CUSTOMERS})
    server = ServerThread([endpoint], config=kit.gateway_config())
    server.gateway.handler.online_store = store
    inputs = kit.echo_inputs(1)
    del inputs["n"]
    inputs["customer_id"] = np.array(["stale"], dtype=object)
    with server, httpx.Client(base_url=server.url, timeout=10.0) as client:
        answer = client.post(
            "/v2/models/echo/infer",
            content=encode_request(inputs).body,
            headers={"x-request-id": "joined-1"},
        )
        assert answer.status_code == 200, answer.text
    spans = wait_for(lambda: _by_request(receiver.received(), "joined-1"), 10.0, "spans")
    join = spans["feature_join"]
    assert join.parent_span_id == spans["root"].span_id
    assert join.attributes == {
        "modelplane.feature_sets": ["customers:1"],
        "modelplane.features.defaulted": ["n"],
    }
    assert spans["decode"].end_ns <= join.start_ns <= join.end_ns <= spans["validate"].start_ns


def test_the_sampler_comes_from_the_environment(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's sampled-out traceparent is respected (parentbased default), and a ratio
    of 0 samples nothing else: nothing is exported."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    endpoint = kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract("echo")).build()
    sampled = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with ServerThread([endpoint], config=kit.gateway_config()) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            for i in range(5):
                assert _post(client, 1.0, f"dropped-{i}").status_code == 200
            assert _post(client, 1.0, "kept", traceparent=sampled).status_code == 200
        wait_for(receiver.received, 10.0, "the sampled request's spans")
    # the gateway stopped: its provider flushed everything it had
    ids = {s.attributes.get("modelplane.request_id") for s in receiver.received()}
    assert ids - {None} == {"kept"}


def test_tracing_is_requested_by_the_standard_variables() -> None:
    assert not tracing_requested({})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h/v1/traces"})
    assert not tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h", "OTEL_SDK_DISABLED": "true"}
    assert not tracing_requested(disabled)
    assert from_environment({}) is None


def test_without_an_exporter_no_span_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_TRACES_EXPORTER=none``: the sampling decision is made, and no span is built,
    since nothing would receive it."""
    tracer = from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert tracer is not None
    assert tracer.processor is None
    built: list[str] = []
    monkeypatch.setattr(tracer, "_finished", lambda name, *args, **kw: built.append(name))
    endpoint = kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract("echo")).build()
    runtime: Any = SimpleNamespace(name="echo", endpoint=endpoint.endpoint)
    trace = RequestTrace(started_at=10.0, enqueued_at=10.002)
    tracer.record(trace, runtime, "r-1", decoded_at=10.001, answered_at=10.01, status=200,
                  model_version="echo:1", route="echo:1", ended_at=10.02)  # fmt: skip
    tracer.shutdown()
    assert built == []


_NO_OTEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import httpx
    from tests.dataplane import gateway_kit as kit
    from modelplane.dataplane.codec_v2 import encode_request
    from modelplane.dataplane.server import ServerThread

    endpoint = kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract("echo")).build()
    with ServerThread([endpoint], config=kit.gateway_config()) as server:
        body = encode_request(kit.echo_inputs(1)).body
        answer = httpx.post(f"{server.url}/v2/models/echo/infer", content=body, timeout=10)
        tracer = server.gateway.tracer
    print(json.dumps({
        "status": answer.status_code,
        "tracer": repr(tracer),
        "otel": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    }))
    """
)


def test_without_the_variable_serving_imports_no_opentelemetry() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _NO_OTEL_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=str(kit.HERE.parent.parent),
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"status": 200, "tracer": "None", "otel": []}


DOC = Path(__file__).resolve().parents[2] / "docs" / "tracing.md"


def test_the_docs_example_traces_a_request_of_modelplane_serve(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """docs/tracing.md's two shell blocks as written, with the collector, the home and the
    port made this test's: the home holds what ``make run`` pushes (``fraud@champion``),
    ``modelplane serve`` is a real process, and curl calls it."""
    serve_block, curl_block = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)[:2]
    port = str(free_port())
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"MODELPLANE_HOME": str(home), "OTEL_BSP_SCHEDULE_DELAY": "50"}
    cli(env, "push", str(_first_run_models(tmp_path).build(1)), "--alias", "champion")
    serve_script = (
        serve_block.replace("$PWD/run-home/first-run", str(home))
        .replace("http://127.0.0.1:4318", receiver.url)
        .replace("--port 8001", f"--port {port}")
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        serving = subprocess.Popen(
            ["bash", "-c", serve_script], env=env, start_new_session=True,
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: _ready(port), 60.0, f"modelplane serve to be ready ({log})")
        curl = curl_block.replace("127.0.0.1:8001", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["model_version"] == "fraud:1", done.stdout
    finally:
        os.killpg(serving.pid, signal.SIGTERM)  # drains: the gateway's stop exports its spans
        serving.wait(30)
    spans = wait_for(lambda: _by_request(receiver.received(), "checkout-42"), 10.0, "spans")
    root = spans["root"]
    assert root.resource["service.name"] == "fraud-gateway"
    assert (root.trace_id, root.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert root.attributes["modelplane.model_version"] == "fraud:1"
    assert root.attributes["modelplane.endpoint"] == "fraud-score"
    assert {"decode", "validate", "batch", "queue", "compute", "encode"} <= set(spans)


def _first_run_models(work: Path) -> Any:
    """``examples/first_run.py``'s fraud models, as ``make run`` trains them."""
    import importlib.util

    path = kit.HERE.parent.parent / "examples" / "first_run.py"
    spec = importlib.util.spec_from_file_location("first_run", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Models(work)


def _ready(port: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _recorded(trace: RequestTrace, **outcome: Any) -> dict[str, Any]:
    """``record`` into the SDK's in-memory exporter: span name → span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer = RequestTracer(TracerProvider(), SimpleSpanProcessor(exporter))
    endpoint = kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract("echo")).build()
    runtime: Any = SimpleNamespace(name="echo", endpoint=endpoint.endpoint)
    tracer.record(trace, runtime, "r-1", **outcome)
    tracer.shutdown()
    tracer.shutdown()  # twice is harmless (a failed start stops the gateway twice)
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_request_refused_before_the_batcher_has_only_its_decode() -> None:
    trace = RequestTrace(started_at=10.0)
    spans = _recorded(trace, decoded_at=10.001, answered_at=0.0, status=422,
                      model_version=None, route="", error_code="contract_violation",
                      ended_at=10.002)  # fmt: skip
    assert set(spans) == {"POST /v2/models/{model}/infer", "decode"}
    root = spans["POST /v2/models/{model}/infer"]
    assert root.attributes["error.type"] == "contract_violation"
    assert root.status.is_unset  # a 4xx is the caller's error, not the server's


def test_a_deadline_cuts_the_batch_at_the_answer() -> None:
    trace = RequestTrace(started_at=10.0, enqueued_at=10.002)
    trace.batch = BatchTiming(10.003, 8)  # never returned: the deadline answered first
    spans = _recorded(trace, decoded_at=10.001, answered_at=0.0, status=504,
                      model_version="echo:1", route="echo:1", error_code="deadline_exceeded",
                      version="1", ended_at=10.5)  # fmt: skip
    root = spans["POST /v2/models/{model}/versions/{version}/infer"]
    assert root.attributes["url.path"] == "/v2/models/echo/versions/1/infer"
    assert not root.status.is_ok
    assert not root.status.is_unset
    assert spans["compute"].end_time == spans["batch"].end_time == root.end_time
    assert spans["compute"].attributes == {"modelplane.batch.rows": 8}
    assert spans["queue"].end_time == spans["compute"].start_time

"""OpenTelemetry traces of predictions, exported over OTLP/HTTP when the environment asks.

Tracing is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set, and off costs nothing: :func:`from_environment` (called when a gateway is built, so
by ``serve`` and ``up``) returns ``None``, a request's path tests ``tracer is not None``
twice (and a local flag twice), and no ``opentelemetry`` module is imported (the SDK is
the optional ``otel`` extra). When it is on, the standard variables of the SDK and the
OTLP exporter apply as they do anywhere: ``OTEL_SERVICE_NAME`` (default
``modelplane-gateway``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, the
batch processor's ``OTEL_BSP_*``; ``OTEL_TRACES_EXPORTER=none`` makes the sampling decision
and builds no span (nothing would receive it), ``OTEL_SDK_DISABLED=true`` turns tracing off.

Spans are *reconstructed* once the response is sent, from the monotonic timestamps a request
already collects on its :class:`~modelplane.observe.records.RequestTrace` (the batcher stamps
queueing and each batch's round trip): nothing is propagated into the worker processes and
nothing is allocated for tracing while a request is in flight. One request gives::

    POST /v2/models/{model}/infer      SERVER, the caller's W3C traceparent as parent
    ├── decode                         body read, decoded, datatypes checked
    ├── feature_join                   online store lookups (endpoints binding feature sets)
    ├── validate                       route choice and the contract's input check
    ├── batch                          from joining the batcher's queue to the batch's answer
    │   ├── queue                      waiting for a worker and for the batch to form
    │   └── compute                    the batch on the worker: IPC, predict, output check
    └── encode                         the answer encoded and sent

The worker's own time is not split from the IPC around it (the worker reports no clock);
``compute`` is the batch's round trip as the gateway saw it, shared by every request of the
batch (``modelplane.batch.rows`` says how many rows it carried).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from modelplane import __version__
from modelplane.observe.records import RequestTrace

if TYPE_CHECKING:
    from modelplane.dataplane.endpoint_runtime import EndpointRuntime

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "ENDPOINT_VARIABLES",
    "RequestTracer",
    "from_environment",
    "tracing_requested",
]

log = logging.getLogger("modelplane.tracing")

DEFAULT_SERVICE_NAME = "modelplane-gateway"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""Setting either turns tracing on (the exporter reads them itself)."""

_V2_ROUTE = "/v2/models/{model}/infer"
_V2_VERSION_ROUTE = "/v2/models/{model}/versions/{version}/infer"
_RECORDS_ROUTE = "/v1/endpoints/{endpoint}:predict"
_PROPAGATED = (b"traceparent", b"tracestate")


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment names an OTLP endpoint and does not disable the SDK."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def from_environment(environ: Mapping[str, str] | None = None) -> RequestTracer | None:
    """A tracer exporting over OTLP/HTTP as the ``OTEL_*`` variables say, or ``None`` when
    tracing is not requested (see the module docstring). Needs the ``otel`` extra."""
    if not tracing_requested(environ):
        return None
    env = os.environ if environ is None else environ
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ImportError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'modelplane[otel]'"
        ) from exc
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    # the sampler comes from OTEL_TRACES_SAMPLER(_ARG), as the SDK reads them
    provider = TracerProvider(resource=resource)
    processor = None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ImportError(
                "the OTLP/HTTP exporter is not installed: pip install 'modelplane[otel]'"
            ) from exc
        processor = BatchSpanProcessor(OTLPSpanExporter())
        provider.add_span_processor(processor)  # shut down (and flushed) with the provider
    log.info("tracing requests over OTLP as %s", resource.attributes.get("service.name"))
    return RequestTracer(provider, processor)


class RequestTracer:
    """Turns a finished request's timestamps into OpenTelemetry spans.

    The spans are the SDK's finished spans (``ReadableSpan``), built directly and handed to
    ``processor`` (an SDK ``SpanProcessor``: the batch processor in front of the OTLP
    exporter), rather than started and ended through a tracer: every stamp is known once
    the answer is sent, and a finished span costs a few microseconds where a live one
    costs tens (locks, bounded attributes, the active span processor's fan-out). The
    sampler, resource and ids are the ``provider``'s. ``processor`` ``None`` (no exporter):
    the sampling decision is made and no span is built, since nothing would receive it.
    """

    def __init__(self, provider: Any, processor: Any | None) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.processor = processor
        self._stopped = False
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._resource = provider.resource
        self._scope = InstrumentationScope("modelplane.gateway", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._current = trace.get_current_span
        self._span = ReadableSpan
        self._context = SpanContext
        self._sampled = TraceFlags(TraceFlags.SAMPLED)
        self._server = SpanKind.SERVER
        self._internal = SpanKind.INTERNAL
        self._status = Status
        self._error = StatusCode.ERROR
        self._unset = Status(StatusCode.UNSET)

    def record(
        self,
        trace: RequestTrace,
        runtime: EndpointRuntime,
        request_id: str,
        *,
        decoded_at: float,
        answered_at: float,
        status: int,
        model_version: str | None,
        route: str,
        fallback_reason: str | None = None,
        error_code: str | None = None,
        version: str | None = None,
        records: bool = False,
        headers: Iterable[tuple[bytes, bytes]] = (),
        ended_at: float | None = None,
    ) -> None:
        """Emit the spans of one answered request (see the module docstring); ``headers``
        are the request's, read for a W3C ``traceparent``."""
        ended = time.monotonic() if ended_at is None else ended_at
        name = runtime.name
        if records:
            template = _RECORDS_ROUTE
        else:
            template = _V2_ROUTE if version is None else _V2_VERSION_ROUTE
        span_name = f"POST {template}"
        parent_context = self._parent(headers)
        parent = self._current(parent_context).get_span_context() if parent_context else None
        trace_id = parent.trace_id if parent is not None and parent.is_valid else 0
        if not trace_id:
            parent = None
            trace_id = self._ids.generate_trace_id()
        decision = self._sampler.should_sample(parent_context, trace_id, span_name, self._server)
        processor = self.processor
        if processor is None or not decision.decision.is_sampled():
            return
        if records:
            path = f"/v1/endpoints/{name}:predict"
        elif version is None:
            path = f"/v2/models/{name}/infer"
        else:
            path = f"/v2/models/{name}/versions/{version}/infer"
        attributes: dict[str, Any] = {
            **decision.attributes,
            "http.request.method": "POST",
            "http.route": template,
            "url.path": path,
            "http.response.status_code": status,
            "modelplane.request_id": request_id,
            "modelplane.endpoint": name,
            "modelplane.team": runtime.endpoint.team,
            "modelplane.route_kind": trace.route_kind,
        }
        if model_version:
            attributes["modelplane.model_version"] = model_version
        if route:
            attributes["modelplane.route"] = route
        if fallback_reason is not None:
            attributes["modelplane.fallback_reason"] = fallback_reason
        if error_code is not None:
            attributes["error.type"] = error_code
        # one offset per request: monotonic stamps to the wall clock spans are exported in
        offset = time.time_ns() - int(ended * 1e9)
        root = self._context(trace_id, self._ids.generate_span_id(), False, self._sampled,
                             decision.trace_state)  # fmt: skip
        status_of = self._status(self._error, trace.cause or error_code) if status >= 500 else None
        spans = [self._finished(span_name, root, parent, attributes, trace.started_at, ended,
                                offset, kind=self._server, status=status_of)]  # fmt: skip
        for stage, start, end, extra in _stages(trace, decoded_at, answered_at, ended):
            if start <= 0.0 or end < start:
                continue
            context = self._child(root)
            spans.append(self._finished(stage, context, root, extra, start, end, offset))
            if stage == "batch":
                timing = trace.batch
                dispatched = timing.dispatched_at if timing is not None else 0.0
                if dispatched >= start:
                    spans.append(self._finished("queue", self._child(root), context, None,
                                                start, dispatched, offset))  # fmt: skip
                    spans.append(self._finished("compute", self._child(root), context, extra,
                                                dispatched, end, offset))  # fmt: skip
        for span in reversed(spans):  # children end first, as live spans would
            processor.on_end(span)

    def _child(self, root: Any) -> Any:
        return self._context(root.trace_id, self._ids.generate_span_id(), False,
                             self._sampled, root.trace_state)  # fmt: skip

    def _finished(
        self,
        name: str,
        context: Any,
        parent: Any,
        attributes: dict[str, Any] | None,
        start: float,
        end: float,
        offset: int,
        *,
        kind: Any = None,
        status: Any = None,
    ) -> Any:
        return self._span(
            name, context, parent, self._resource, attributes, (), (),
            kind or self._internal, None, status or self._unset,
            int(start * 1e9) + offset, int(end * 1e9) + offset, self._scope,
        )  # fmt: skip

    def _parent(self, headers: Iterable[tuple[bytes, bytes]]) -> Any:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _PROPAGATED}
        return self._propagator.extract(carrier) if carrier else None

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        """Export what is buffered now; False when it did not finish in time."""
        return bool(self.processor.force_flush(timeout_ms)) if self.processor else True

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocks up to the exporter's timeout); once."""
        if not self._stopped:
            self._stopped = True
            self.provider.shutdown()


def _stages(
    trace: RequestTrace, decoded_at: float, answered_at: float, ended: float
) -> list[tuple[str, float, float, dict[str, Any] | None]]:
    """``(name, start, end, attributes)`` of the request's stages, in order; a stage not
    reached has a start of 0.0."""
    stages: list[tuple[str, float, float, dict[str, Any] | None]] = []
    stages.append(("decode", trace.started_at if decoded_at else 0.0, decoded_at, None))
    checked_from = decoded_at
    if trace.join_started_at:
        joined = trace.joined_at or answered_at or ended
        features = trace.features
        extra = {"modelplane.feature_sets": list(features.sets)} if features else None
        if features is not None and features.defaulted:
            extra = {**(extra or {}), "modelplane.features.defaulted": list(features.defaulted)}
        stages.append(("feature_join", trace.join_started_at, joined, extra))
        checked_from = joined
    enqueued = trace.enqueued_at
    if enqueued and checked_from and enqueued >= checked_from:
        stages.append(("validate", checked_from, enqueued, None))
    timing = trace.batch
    if enqueued:
        returned = (timing.returned_at if timing is not None else 0.0) or answered_at or ended
        rows: dict[str, Any] | None = None
        if timing is not None:
            rows = {"modelplane.batch.rows": timing.rows}
        stages.append(("batch", enqueued, min(returned, ended), rows))
    if answered_at:
        stages.append(("encode", answered_at, ended, None))
    return stages

"""The gateway: a raw ASGI app for Open Inference Protocol v2 and records JSON.

No web framework sits on the hot path: a request is one scan of its headers, a few string
comparisons to route it, msgspec to decode and encode, and :class:`InferenceHandler` for the
rest. Header names and static bodies are prepared once.

Routes (see :func:`~modelplane.dataplane.openapi.openapi_document`):

- ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata)
- ``GET /v2/models/{name}[/versions/{version}]`` (metadata) and ``.../ready``
- ``POST /v2/models/{name}[/versions/{version}]/infer`` (JSON or binary tensors)
- ``POST /v1/endpoints/{name}:predict`` (records) and ``GET /v1/endpoints``
- ``POST /v1/endpoints/{name}:feedback``: outcomes of earlier answers, by request id
- ``GET /metrics`` (Prometheus text) and ``GET /openapi.json``

Every response carries ``modelplane-request-id`` (the caller's ``x-request-id`` when given)
and, when a model answered, ``modelplane-model-version``; a fallback answer carries
``modelplane-fallback: <reason>``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from modelplane import __version__
from modelplane.core.circuit import BreakerConfig, BreakerState
from modelplane.core.serving import GatewaySnapshot
from modelplane.dataplane.codec_v2 import InferResponse, check_datatypes, encode_response
from modelplane.dataplane.edge import EdgeConfig
from modelplane.dataplane.endpoint_runtime import (
    EndpointConfig,
    EndpointRuntime,
    ModelVersionRuntime,
    RouteRuntime,
    build_endpoints,
    describe,
    resize_kept,
    serves_same,
)
from modelplane.dataplane.evidence import FeedbackSink, PredictionSink, prediction_record
from modelplane.dataplane.features_join import DEFAULTED_HEADER
from modelplane.dataplane.handler import InferenceHandler, Result, one_line
from modelplane.dataplane.http import (
    V2_MODELS,
    HttpError,
    deadline_of,
    error_body,
    error_code,
    error_headers,
    expect_method,
    lower_timeout,
    model_path,
    read_body,
    status_of,
)
from modelplane.dataplane.metrics import (
    CONTENT_TYPE,
    EndpointReading,
    GatewayMetrics,
    RouteReading,
    ShadowReading,
    VersionReading,
)
from modelplane.dataplane.offload import LargeBodies, decode_records, decode_v2
from modelplane.dataplane.openapi import openapi_document
from modelplane.dataplane.pool import PoolConfig, PoolFactory, forkserver
from modelplane.dataplane.records import encode_predictions
from modelplane.dataplane.snapshot import build_snapshot
from modelplane.dataplane.tracing import RequestTracer, from_environment
from modelplane.errors import (
    ContractViolation,
    InvalidSpec,
    MalformedRequest,
    ModelplaneError,
    NotFound,
)
from modelplane.features.base import OnlineStore
from modelplane.observe.outcomes import Stored, parse_feedback
from modelplane.observe.records import RequestTrace
from modelplane.security.auth import PredictAuthorizer
from modelplane.types import Clock, SystemClock

__all__ = ["Gateway", "GatewayConfig"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

log = logging.getLogger("modelplane.gateway")

_JSON_TYPE = (b"content-type", b"application/json")
_BINARY_TYPE = (b"content-type", b"application/octet-stream")
_REQUEST_ID = b"modelplane-request-id"
_MODEL_VERSION = b"modelplane-model-version"
_FALLBACK = b"modelplane-fallback"
_CONTENT_LENGTH = b"content-length"
_HEADER_LENGTH = b"inference-header-content-length"
_ENCODER = msgspec.json.Encoder()
_WORKER_PRELOAD = (
    "numpy",
    "msgspec",
    "modelplane.dataplane.pool.worker",
    "modelplane.dataplane.loader",
)
# What a runtime's workers import, imported once by the forkserver instead (the warm
# template; see modelplane.dataplane.pool.forkserver). The threads these imports start are
# fork-aware (BLAS pools, jemalloc; see pool.warm_sklearn); torch's are not, so it is left out.
_ENGINE_PRELOAD: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "modelplane.runtime.onnx"),
    "sklearn": ("modelplane.dataplane.pool.warm_sklearn", "modelplane.runtime.sklearn"),
    "xgboost": ("xgboost", "modelplane.runtime.xgboost"),
    "lightgbm": ("lightgbm", "modelplane.runtime.lightgbm"),
}
_V1_ENDPOINTS = "/v1/endpoints/"
_PREDICT = ":predict"
_FEEDBACK = ":feedback"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Settings of one gateway."""

    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    """Defaults for every model version's pool; replicas come from each endpoint."""
    max_body_bytes: int = 64 * 1024 * 1024
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    """Limits of the HTTP edge: deadlines, connections, rows per request, large bodies."""
    seed: int | None = None
    """Seed of the route choice; ``None`` draws one."""
    name: str = "modelplane"
    clock: Clock = field(default_factory=SystemClock)
    """What circuit breakers read (windows, cool-downs); deadlines use the monotonic clock."""
    node: str = "local"
    """The node this gateway's worker processes run on, as its snapshot names it."""
    pools: PoolFactory | None = None
    """Builds each model version's replicas; ``None``: worker processes of this machine
    (``system.backend_pool`` builds pools an execution backend hosts)."""


@dataclass(slots=True)
class _Request(RequestTrace):
    """What one scan of the headers found; also the request's trace, so timing a request
    allocates nothing more."""

    request_id: str
    timeout_ms: float | None = None
    header_length: int | None = None
    content_length: int | None = None
    authorization: str | None = None
    headers: Headers | None = None
    decoded_at: float = 0.0
    answered_at: float = 0.0
    """When the body was decoded and the handler answered; stamped only while tracing."""


class Gateway:
    """The ASGI app; ``lifespan`` starts and stops the model versions' workers."""

    def __init__(
        self,
        endpoints: Sequence[EndpointConfig],
        config: GatewayConfig | None = None,
        *,
        sink: PredictionSink | None = None,
        online_store: OnlineStore | None = None,
        auth: PredictAuthorizer | None = None,
        feedback: FeedbackSink | None = None,
    ):
        self.config = config or GatewayConfig()
        self.auth = auth
        """Checks the token of every predict call; ``None``: predictions need no token."""
        self.feedback = feedback
        """Where ``:feedback`` outcomes go (the outcome store); ``None``: the route is off."""
        self.sink = sink
        """Where kept predictions go (the prediction log); set it before :meth:`start`."""
        self.metrics = GatewayMetrics()
        self._rng = random.Random(self.config.seed)
        self._update_lock = asyncio.Lock()
        runtimes, versions = build_endpoints(
            endpoints, self.config.pool, self.metrics, self._rng, pools=self.config.pools
        )
        self.handler = InferenceHandler(
            runtimes, self.config.breaker, online_store, clock=self.config.clock
        )
        self.handler.max_rows = self.config.edge.max_rows
        self.bodies = LargeBodies(self.config.edge, self.config.pool.start_method)
        self.metrics.shadows = self._shadow_readings
        self.metrics.endpoints = self._endpoint_readings
        self.tracer: RequestTracer | None = from_environment()
        """Spans of every answered request (:mod:`.tracing`); ``None``, tracing off, unless
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
        self.versions: list[ModelVersionRuntime] = versions
        self.started = False
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop serving requests, once started: other threads submit updates to it."""
        self.startup_error: BaseException | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._desired: frozenset[str] | None = None
        self._initial: frozenset[str] | None = None
        self._settled: set[str] = set()
        self._failures: dict[str, str] = {}
        self._starting: list[ModelVersionRuntime] = []
        """Versions warming up for a :meth:`put`, not routed yet (stopped with the gateway)."""
        self._next_log_at = 0.0
        self._quiet_failures = 0
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._server_metadata = _ENCODER.encode(
            {"name": self.config.name, "version": __version__, "extensions": ["binary_tensor_data"]}
        )
        self._openapi = _ENCODER.encode(openapi_document(self.config.name, __version__))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every model version's workers; return once all are ready."""
        self.loop = asyncio.get_running_loop()
        self._preload_workers(self.versions)
        results = await asyncio.gather(*(v.start() for v in self.versions), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]
        if self.sink is not None:
            await self.sink.start()
        self.started = True

    def _preload_workers(self, versions: Sequence[ModelVersionRuntime]) -> None:
        """Have the forkserver import what every worker imports (the loader, and the engines
        of the runtimes served) once, so each worker, and each restart, starts warm. Called
        for every version started, at start and on every put: a runtime new to this gateway
        gets a fresh forkserver that imports it too."""
        if self.config.pool.start_method != "forkserver" or self.config.pools is not None:
            return
        modules = [*_WORKER_PRELOAD]
        runtimes = sorted({v.source.manifest.runtime.value for v in versions})
        modules += [m for runtime in runtimes for m in _ENGINE_PRELOAD.get(runtime, ())]
        forkserver.preload(modules)

    def expect(self, names: Collection[str]) -> None:
        """Tell the gateway which endpoints it should serve, before they all run.

        Until one of them runs, its requests answer 503 ``not_ready`` with ``Retry-After``
        (never 404, which tells clients and load balancers not to retry). The first set it is
        told is what gateway-wide readiness waits for: ``/v2/health/ready`` answers 200 once
        each of those endpoints has been started or has failed to start. Endpoints added
        later have their own readiness (``/v2/models/{name}/ready``) and never take the
        whole gateway out of a load balancer.
        """
        desired = frozenset(names)
        if self._initial is None:
            self._initial = desired
        self._desired = desired
        self._refresh_pending()

    def snapshot(self, endpoint: str | None = None) -> GatewaySnapshot:
        """What this gateway serves now, as controllers read it: copies, built on demand
        (never on a request's path); ``endpoint`` narrows it to that one endpoint."""
        return build_snapshot(
            self.handler.endpoints, self.metrics, node=self.config.node, only=endpoint
        )

    def start_failure(self, endpoint: str) -> str | None:
        """Why the last start of ``endpoint`` failed; ``None`` when it did not."""
        return self._failures.get(endpoint)

    async def put(self, config: EndpointConfig, timeout_s: float = 10.0) -> None:
        """Serve ``config``'s endpoint, changing no other endpoint.

        Its new model versions start and warm up while the endpoint keeps serving what it
        served (model versions whose version and settings did not change are kept, so a
        weight change restarts nothing); then its entry in the routing table is swapped in
        one assignment and the versions it no longer reaches drain and stop. Endpoints are
        independent: one that warms up for a minute, or fails, holds up no other. If a
        start fails, the endpoint keeps serving what it served and the error is raised.
        """
        name = config.endpoint.name
        async with self._lock(name):
            current = self.handler.endpoints.get(name)
            if current is not None and serves_same(current, config):
                self._settle(name, None)
                return
            known = set(self.handler.endpoints) | set(self._desired or ())
            try:
                fresh, versions = build_endpoints(
                    [config],
                    self.config.pool,
                    self.metrics,
                    self._rng,
                    also_served=known - {name},
                    reuse={name: current} if current is not None else None,
                    pools=self.config.pools,
                )
            except ModelplaneError as exc:
                self._settle(name, one_line(exc))
                raise
            self._preload_workers(versions)
            self._starting.extend(versions)
            try:
                results = await asyncio.gather(
                    *(v.start() for v in versions), return_exceptions=True
                )
            finally:
                started = {id(v) for v in versions}
                self._starting = [v for v in self._starting if id(v) not in started]
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                await asyncio.gather(*(v.stop(timeout_s) for v in versions))
                failure = failures[0]
                why = one_line(failure) if isinstance(failure, ModelplaneError) else repr(failure)
                self._settle(name, why)
                raise failure
            runtime = fresh[name]
            for target, replicas in resize_kept(fresh, versions):
                await target.resize(replicas)
            reached = {id(t) for t in runtime.targets}
            retired = [t for t in current.targets if id(t) not in reached] if current else []
            # one assignment: a request sees the old table or the new one, never a mix
            self.handler.endpoints = {**self.handler.endpoints, name: runtime}
            gone = {id(t) for t in retired}
            self.versions = [v for v in self.versions if id(v) not in gone] + versions
            self._settle(name, None)
            await asyncio.gather(*(v.stop(timeout_s) for v in retired))

    async def remove(self, name: str, timeout_s: float = 10.0) -> None:
        """Stop serving ``name``: it leaves the routing table, then its versions drain."""
        async with self._lock(name):
            table = dict(self.handler.endpoints)
            runtime = table.pop(name, None)
            self._failures.pop(name, None)
            if runtime is None:
                return
            self.handler.endpoints = table
            gone = {id(t) for t in runtime.targets}
            self.versions = [v for v in self.versions if id(v) not in gone]
            self._refresh_pending()
            await asyncio.gather(*(t.stop(timeout_s) for t in runtime.targets))

    async def update(self, configs: Sequence[EndpointConfig], timeout_s: float = 10.0) -> None:
        """Serve exactly ``configs``: each endpoint is put (see :meth:`put`) on its own and
        those not listed are removed. One endpoint's failure changes nothing for the others;
        the first failure is raised once every endpoint has been handled."""
        names = [c.endpoint.name for c in configs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidSpec(f"endpoint '{twice[0]}' is configured twice")
        self.expect(names)
        results = await asyncio.gather(
            *(self.put(c, timeout_s) for c in configs), return_exceptions=True
        )
        unwanted = set(self.handler.endpoints) - set(names)
        await asyncio.gather(*(self.remove(n, timeout_s) for n in unwanted))
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    def _lock(self, endpoint: str) -> asyncio.Lock:
        lock = self._locks.get(endpoint)
        if lock is None:
            lock = self._locks[endpoint] = asyncio.Lock()
        return lock

    def _settle(self, endpoint: str, failure: str | None) -> None:
        """Record how the latest start of ``endpoint`` ended (``None``: it serves)."""
        self._settled.add(endpoint)
        if failure is None:
            self._failures.pop(endpoint, None)
        else:
            self._failures[endpoint] = failure
        self._refresh_pending()

    def _refresh_pending(self) -> None:
        served = self.handler.endpoints
        self.handler.pending = {
            name: self._failures.get(name, "it is starting")
            for name in self._desired or ()
            if name not in served
        }

    def _shadow_readings(self) -> list[ShadowReading]:
        return [
            ShadowReading(
                runtime.name, shadow.target.label, c.compared, c.disagreed,
                c.relative_error_sum, c.failed, c.dropped,
            )
            for runtime in list(self.handler.endpoints.values())
            for shadow in runtime.shadows
            for c in (shadow.comparison,)
        ]  # fmt: skip

    def _endpoint_readings(self) -> list[EndpointReading]:
        return [_endpoint_reading(runtime) for runtime in list(self.handler.endpoints.values())]

    def degrade(self, shed_tiers: frozenset[str], fallback_tiers: frozenset[str]) -> None:
        """Serve degraded: endpoints of ``shed_tiers`` answer 429, those of
        ``fallback_tiers`` that have a fallback answer with it; empty sets end it."""
        self.handler.shed_tiers = frozenset(shed_tiers)
        self.handler.fallback_tiers = frozenset(fallback_tiers)

    def serving(self, endpoint: str) -> bool:
        """True when ``endpoint`` is in the table and has a ready route."""
        runtime = self.handler.endpoints.get(endpoint)
        return runtime is not None and runtime.ready

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Send what is queued, wait for running batches, stop the workers."""
        self.draining = True
        await asyncio.gather(*(v.stop(timeout_s) for v in [*self.versions, *self._starting]))
        if self.sink is not None:
            await self.sink.stop()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)  # exports what is buffered
        self.bodies.close()

    @property
    def ready(self) -> bool:
        """Able to serve what it has been told to serve: started, not draining, and every
        endpoint of the first set it was told (see :meth:`expect`) started or failed. One
        endpoint down answers 503 on its own ``/v2/models/{name}/ready``, not here."""
        if not self.started or self.draining:
            return False
        initial = self._initial
        return initial is None or initial <= self._settled

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    self.startup_error = exc
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _scan(self, headers: Headers) -> _Request:
        request = _Request("")
        request.headers = headers  # read again only while tracing (a traceparent)
        try:
            for name, value in headers:
                if name == _CONTENT_LENGTH:
                    request.content_length = int(value)
                elif name == _HEADER_LENGTH:
                    request.header_length = int(value)
                elif name == b"x-request-id":
                    request.request_id = value.decode("latin-1")[:200]
                elif name == b"modelplane-timeout-ms":
                    request.timeout_ms = float(value)
                elif name == b"authorization":
                    request.authorization = value.decode("latin-1")
        except ValueError:
            request.request_id = request.request_id or self._new_id()
            raise HttpError("invalid_spec", "a numeric header is not a number") from None
        if not request.request_id:
            request.request_id = self._new_id()
        return request

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        v2 = path.startswith("/v2")
        request = _Request("")
        try:
            request = self._scan(scope["headers"])
            if path.startswith(V2_MODELS):
                name, version, action = model_path(path)
                if action == "infer":
                    expect_method(method, "POST")
                    await self._infer(name, version, request, receive, send, v2=True)
                else:
                    expect_method(method, "GET")
                    await self._model_get(name, version, action, request, send)
            elif path.startswith(_V1_ENDPOINTS) and path.endswith(_PREDICT):
                name = path[len(_V1_ENDPOINTS) : -len(_PREDICT)]
                expect_method(method, "POST")
                await self._infer(name, None, request, receive, send, v2=False)
            # after :predict, so a prediction pays no test for the rarer route
            elif path.startswith(_V1_ENDPOINTS) and path.endswith(_FEEDBACK):
                name = path[len(_V1_ENDPOINTS) : -len(_FEEDBACK)]
                expect_method(method, "POST")
                await self._feedback(name, request, receive, send)
            else:
                status, body, content_type = self._static(path, method)
                await _respond(send, status, body, _headers(request, content_type))
        except ModelplaneError as exc:
            await self._error(send, exc, request, v2=v2)
        except Exception as exc:  # a bug of ours: answer 500, never drop the request
            log.exception("request %s failed unexpectedly", request.request_id)
            internal = HttpError("internal", f"internal error: {type(exc).__name__}")
            await self._error(send, internal, request, v2=v2)

    def _static(self, path: str, method: str) -> tuple[int, bytes, tuple[bytes, bytes]]:
        expect_method(method, "GET")
        if path == "/v2/health/live":
            return 200, b"", _JSON_TYPE
        if path == "/v2/health/ready":
            return (200 if self.ready else 503), b"", _JSON_TYPE
        if path in ("/v2", "/v2/"):
            return 200, self._server_metadata, _JSON_TYPE
        if path == "/metrics":
            return 200, self.metrics.render(), (b"content-type", CONTENT_TYPE.encode())
        if path == "/openapi.json":
            return 200, self._openapi, _JSON_TYPE
        if path == "/v1/endpoints":
            return 200, self._endpoint_list(), _JSON_TYPE
        raise HttpError("not_found", f"no route for {path}")

    def _endpoint_list(self) -> bytes:
        return _ENCODER.encode({"endpoints": describe(self.handler.endpoints.values())})

    async def _model_get(
        self, name: str, version: str | None, action: str, request: _Request, send: Send
    ) -> None:
        runtime = self.handler.endpoint(name)
        if version is not None and runtime.route_for_version(version) is None:
            raise HttpError("not_found", f"model '{name}' has no version '{version}'")
        if action == "ready":
            status = 200 if runtime.ready and not self.draining else 503
            await _respond(send, status, b"", _headers(request, _JSON_TYPE))
        else:
            await _respond(send, 200, runtime.metadata, _headers(request, _JSON_TYPE))

    # ------------------------------------------------------------------ inference

    async def _infer(
        self,
        name: str,
        version: str | None,
        request: _Request,
        receive: Receive,
        send: Send,
        *,
        v2: bool,
    ) -> None:
        runtime = self.handler.endpoint(name)
        if self.auth is not None:  # before anything is read, counted or logged
            await self._authorize(runtime, request)
        started = request.started_at = time.monotonic()
        label = ""
        sink = self.sink
        try:
            if v2:
                result, payload, headers = await self._v2_infer(runtime, version, receive, request)
            else:
                result, payload, headers = await self._records_infer(runtime, receive, request)
            label = result.model_version or ""
            await _respond(send, 200, payload, headers)
            if result.fallback_reason is not None:
                self.metrics.fallback(name, result.fallback_reason)
            self.metrics.request(name, label, result.route, 200, time.monotonic() - started)
            if sink is not None:
                # a success not sampled is kept too, briefly: explain answers for any request
                kept = result.fallback_reason is not None or sink.sampled()
                # a model's answer (not a fallback's) is kept for the outcome join
                answered = result.outputs if result.fallback_reason is None else None
                sink.offer(prediction_record(runtime, request.request_id, request, status=200,
                                             fallback_reason=result.fallback_reason,
                                             brief=not kept, outputs=answered))  # fmt: skip
            if self.tracer is not None:
                self._trace(runtime, request, version, 200, result, None, v2=v2)
        except ModelplaneError as exc:
            code, status = error_code(exc), status_of(exc)
            self.metrics.error(runtime.name, code)
            self.metrics.request(name, label, "", status, time.monotonic() - started)
            if sink is not None:
                sink.offer(prediction_record(runtime, request.request_id, request, status=status,
                                             error_code=code, detail=one_line(exc)))  # fmt: skip
            if self.tracer is not None:
                self._trace(runtime, request, version, status, None, code, v2=v2)
            raise

    def _trace(
        self,
        runtime: EndpointRuntime,
        request: _Request,
        version: str | None,
        status: int,
        result: Result | None,
        code: str | None,
        *,
        v2: bool,
    ) -> None:
        """Hand an answered request to the tracer: a result, or the error ``code``."""
        assert self.tracer is not None
        if result is not None:
            label, ref, reason = result.model_version, result.route, result.fallback_reason
        else:
            route = request.route  # the version that failed, when one was reached
            reached = isinstance(route, RouteRuntime)
            label, ref, reason = (
                (route.target.label, route.ref, None) if reached else (None, "", None)
            )
        self.tracer.record(request, runtime, request.request_id, decoded_at=request.decoded_at,
                           answered_at=request.answered_at, status=status, model_version=label,
                           route=ref, fallback_reason=reason, error_code=code, version=version,
                           records=not v2, headers=request.headers or ())  # fmt: skip

    async def _feedback(self, name: str, request: _Request, receive: Receive, send: Send) -> None:
        """Outcomes of earlier answers (:mod:`modelplane.observe.outcomes`): the same token
        rules as a prediction; stored off the event loop before the answer."""
        try:
            runtime = self.handler.endpoint(name)
        except NotFound:
            # the handler speaks of models (V2's words); feedback is about an endpoint
            raise NotFound(
                f"unknown endpoint '{name}'",
                details=[{"field": "endpoint", "problem": "not served here"}],
            ) from None
        if self.auth is not None:
            await self._authorize(runtime, request)
        sink = self.feedback
        if sink is None:
            raise HttpError("not_found", "this gateway takes no feedback (it has no store)")
        body = await self._body(receive, request)
        items = parse_feedback(body)

        def store() -> tuple[int, Stored]:
            # the tally too: up to 10,000 items of set building, kept off the event loop
            return sink.ingest(name, items, source="api"), Stored.of(items)

        written, tally = await asyncio.to_thread(store)
        # the call's own id only as feedback_request_id (and the header): a bare
        # "request_id" here reads as the id that was fed back
        payload = _ENCODER.encode({"stored": written, "outcomes": tally.outcomes,
                                   "labels": tally.labels, "values": tally.values,
                                   "feedback_request_id": request.request_id})  # fmt: skip
        await _respond(send, 200, payload, _headers(request, _JSON_TYPE))

    async def _authorize(self, runtime: EndpointRuntime, request: _Request) -> None:
        auth = self.auth
        assert auth is not None
        name, team = runtime.name, runtime.endpoint.team
        if not auth.allowed(request.authorization, name, team):  # remembered: no await
            await auth.check(request.authorization, name, team)

    async def _v2_infer(
        self, runtime: EndpointRuntime, version: str | None, receive: Receive, request: _Request
    ) -> tuple[Result, bytes, Headers]:
        name = runtime.name
        decode = functools.partial(decode_v2, request.header_length)
        decoded = await self.bodies.decode(
            request.content_length, lambda: self._body(receive, request), decode
        )
        check_datatypes(runtime.v2_dtypes, decoded.inputs)
        tracing = self.tracer is not None
        if tracing:
            request.decoded_at = time.monotonic()
        timeout_ms = request.timeout_ms
        params = decoded.parameters
        if params and "timeout" in params:
            timeout_ms = lower_timeout(timeout_ms, params["timeout"])
        requested = decoded.outputs
        result = await self.handler.infer(
            name,
            decoded.inputs,
            request_id=request.request_id,
            deadline=deadline_of(timeout_ms),
            requested_outputs=[r.name for r in requested] if requested else None,
            version=version,
            trace=request,
        )
        if tracing:
            request.answered_at = time.monotonic()
        response = InferResponse(
            model_name=name,
            outputs=result.outputs,
            model_version=result.model_version,
            id=decoded.id if decoded.id is not None else request.request_id,
        )
        encoded = encode_response(response, requested, binary_default=decoded.binary_output_default)
        if encoded.header_length is None:
            headers = _result_headers(request, result, _JSON_TYPE)
        else:
            headers = _result_headers(request, result, _BINARY_TYPE)
            headers.append((_HEADER_LENGTH, str(encoded.header_length).encode()))
        return result, encoded.body, headers

    async def _records_infer(
        self, runtime: EndpointRuntime, receive: Receive, request: _Request
    ) -> tuple[Result, bytes, Headers]:
        name = runtime.name
        try:
            columns = await self.bodies.decode(
                request.content_length,
                lambda: self._body(receive, request),
                runtime.records.decode,
                functools.partial(decode_records, runtime.records.fields),
            )
        except MalformedRequest:
            raise  # not JSON at all: no contract was consulted
        except InvalidSpec as exc:
            # the record schema is the contract's: a mistyped field breaks the contract
            raise ContractViolation(exc.message, details=exc.details) from None
        tracing = self.tracer is not None
        if tracing:
            request.decoded_at = time.monotonic()
        result = await self.handler.infer(
            name,
            columns,
            request_id=request.request_id,
            deadline=deadline_of(request.timeout_ms),
            trace=request,
        )
        if tracing:
            request.answered_at = time.monotonic()
        payload = encode_predictions(
            result.outputs, model_version=result.model_version, request_id=request.request_id
        )
        return result, payload, _result_headers(request, result, _JSON_TYPE)

    async def _body(self, receive: Receive, request: _Request) -> bytes:
        return await read_body(receive, request.content_length, self.config.max_body_bytes)

    def _log_failure(self, request: _Request, exc: ModelplaneError) -> None:
        """Log a server-side failure, at most once a second: a broken model fails every
        request, and the metrics count them all; the log needs an example, not a flood."""
        now = time.monotonic()
        if now < self._next_log_at:
            self._quiet_failures += 1
            return
        more = f" ({self._quiet_failures} more since the last)" if self._quiet_failures else ""
        log.warning("request %s failed%s: %s", request.request_id, more, one_line(exc))
        self._next_log_at = now + _LOG_EVERY_S
        self._quiet_failures = 0

    async def _error(
        self, send: Send, exc: ModelplaneError, request: _Request, *, v2: bool
    ) -> None:
        status = status_of(exc)
        if status >= 500 and not isinstance(exc, HttpError):
            self._log_failure(request, exc)
        headers = _headers(request, _JSON_TYPE)
        headers += error_headers(exc)
        route = request.route
        if isinstance(route, RouteRuntime):  # the version that failed, for the caller's logs
            headers.append((_MODEL_VERSION, route.target.label.encode()))
        await _respond(send, status, error_body(exc, v2=v2), headers)


_LOG_EVERY_S = 1.0


def _endpoint_reading(runtime: EndpointRuntime) -> EndpointReading:
    """Routes, model versions and SLO of one endpoint, as ``/metrics`` shows them."""
    from modelplane.observe.cost import REFERENCE_PRICES  # a scrape's, not every request's

    spec = runtime.endpoint
    weights = [route.weight for route in spec.routes]
    total = sum(weights) or 1.0
    routes = tuple(
        RouteReading(route.ref, route.target.label, weight / total,
                     route.breaker.state is not BreakerState.CLOSED)
        for route, weight in zip(runtime.routes, weights, strict=True)
    )  # fmt: skip
    versions = []
    for target in runtime.targets:
        asked = target.source.manifest.resources
        price = (asked.cpu * REFERENCE_PRICES.cpu + asked.memory_mb / 1024 * REFERENCE_PRICES.memory
                 + asked.gpus * REFERENCE_PRICES.gpu)  # fmt: skip
        ready = sum(1 for replica in target.pool.replicas() if replica.state == "ready")
        versions.append(VersionReading(target.label, target.pool.config.replicas, ready,
                                       target.batcher.busy_seconds, price))  # fmt: skip
    slo = spec.contract.slo
    return EndpointReading(
        spec.name, spec.team, slo.availability, slo.latency_ms / 1000, routes, tuple(versions)
    )


def _headers(request: _Request, content_type: tuple[bytes, bytes]) -> Headers:
    return [content_type, (_REQUEST_ID, request.request_id.encode("latin-1"))]


def _result_headers(
    request: _Request, result: Result, content_type: tuple[bytes, bytes]
) -> Headers:
    headers = [content_type, (_REQUEST_ID, request.request_id.encode("latin-1"))]
    if result.model_version is not None:
        headers.append((_MODEL_VERSION, result.model_version.encode()))
    if result.fallback_reason is not None:
        headers.append((_FALLBACK, result.fallback_reason.encode()))
    if request.features is not None and request.features.defaulted:
        headers.append((DEFAULTED_HEADER, ",".join(request.features.defaulted).encode()))
    return headers


async def _respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers.append((_CONTENT_LENGTH, str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

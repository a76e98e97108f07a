"""The one inference handler behind every protocol: contract, route, batch, check, fall back.

``infer`` speaks the domain (named arrays in, named arrays out, typed errors); the gateway
translates HTTP to it and its errors back to HTTP, the same for Open Inference Protocol v2
and records JSON. Steps for one request:

1. validate and coerce the inputs with the endpoint's compiled contract
   (:class:`~modelplane.errors.ContractViolation` names every bad field);
2. choose a route: the one serving the version the caller named, else by the hash of the
   endpoint's sticky key, else by weight;
3. ask the route's breaker; while it is open the fallback answers (it probes again as soon
   as the route's pool has a warm replica after having none);
4. submit to the version's batcher with the deadline (the batcher sheds with
   :class:`~modelplane.errors.Overloaded` and cancels work not started by the deadline);
5. check the outputs against the contract: a wrong answer counts as a failure;
6. record the outcome in the breaker and the route's evidence (for rollout gates); on a
   failure, serve the fallback when there is one;
7. copy the request to the endpoint's shadows, sampled (:mod:`.shadows`): the caller
   never waits for a shadow, and a shadow's answer is only compared with the primary's.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from modelplane.core.circuit import BreakerConfig, BreakerState, admit, record
from modelplane.core.routing import key_point
from modelplane.dataplane.endpoint_runtime import EndpointRuntime, OutputViolation, RouteRuntime
from modelplane.dataplane.fallback import FallbackReason
from modelplane.dataplane.shadows import ShadowSender
from modelplane.errors import (
    ContractViolation,
    DeadlineExceeded,
    InvalidSpec,
    ModelplaneError,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    WorkerFailed,
)
from modelplane.features.base import OnlineStore
from modelplane.observe.records import RequestTrace
from modelplane.spec.contract import DEFAULT_MAX_ROWS, FallbackKind
from modelplane.types import Clock, SystemClock

__all__ = ["InferenceHandler", "OutputViolation", "Result", "one_line"]

Array = npt.NDArray[Any]
Arrays = dict[str, Array]

_MAX_FALLBACK_DEPTH = 3
_CLOSED = BreakerState.CLOSED


@dataclass(slots=True)
class Result:
    """What ``infer`` answers: outputs, who answered, and why the fallback did (if it did)."""

    outputs: Arrays
    model_version: str | None
    fallback_reason: str | None = None
    route: str = ""


def one_line(exc: ModelplaneError) -> str:
    """The message followed by every ``field: problem``, on one line."""
    if not exc.details:
        return exc.message
    parts = [f"{d.get('field')}: {d.get('problem')}" if d.get("field") else str(d.get("problem"))
             for d in exc.details]  # fmt: skip
    return f"{exc.message}: {'; '.join(parts)}"


class InferenceHandler:
    """Serves inference for a set of endpoints; see the module docstring."""

    def __init__(
        self,
        endpoints: Mapping[str, EndpointRuntime],
        breaker: BreakerConfig | None = None,
        online_store: OnlineStore | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.endpoints = dict(endpoints)
        # Breaker windows and cool-downs read this clock (tests move it by hand); deadlines
        # stay on time.monotonic, which the gateway, batchers and pools share.
        self._monotonic = (clock or SystemClock()).monotonic
        self.breaker = breaker or BreakerConfig()
        self.online_store = online_store
        """Where bound feature sets are read from (see :mod:`.features_join`)."""
        self.shadows = ShadowSender()
        self.shed_tiers: frozenset[str] = frozenset()
        """Tiers answered 429 at once while the system is degraded."""
        self.fallback_tiers: frozenset[str] = frozenset()
        """Tiers whose endpoints with a fallback are answered by it while degraded."""
        self.max_rows = DEFAULT_MAX_ROWS
        """Rows per request for endpoints whose contract sets no ``max_rows``."""
        self.pending: Mapping[str, str] = {}
        """Endpoints the server was told to serve that have no runtime yet, with why (still
        starting, or the last start's failure): answered 503 with ``Retry-After``, not 404."""

    def endpoint(self, name: str) -> EndpointRuntime:
        runtime = self.endpoints.get(name)
        if runtime is None:
            why = self.pending.get(name)
            if why is not None:
                raise NotReady(
                    f"endpoint '{name}' is not serving yet: {why}",
                    details=[{"field": "model", "problem": why}],
                )
            raise NotFound(
                f"unknown model '{name}'", details=[{"field": "model", "problem": "not served"}]
            )
        return runtime

    async def infer(
        self,
        endpoint_name: str,
        inputs: Mapping[str, Array],
        *,
        request_id: str = "",
        deadline: float | None = None,
        requested_outputs: Collection[str] | None = None,
        version: str | None = None,
        trace: RequestTrace | None = None,
    ) -> Result:
        """Predict ``inputs`` on the endpoint by ``deadline`` (monotonic; the endpoint's own
        timeout when later or absent); see the module docstring. ``trace`` learns the route
        taken, the batch's timing and why a fallback answered."""
        runtime = self.endpoint(endpoint_name)
        if runtime.endpoint.tier in self.shed_tiers:
            raise Overloaded(
                f"tier '{runtime.endpoint.tier}' is shed while the system is degraded",
                retry_after_s=5.0,
                details=[{"field": "tier", "problem": "shed under overload"}],
            )
        _check_rows(runtime, inputs, self.max_rows)
        if requested_outputs:
            _check_requested(runtime, requested_outputs)
        own = time.monotonic() + runtime.timeout_s  # deadlines: the clock batchers share
        deadline = own if deadline is None or deadline > own else deadline
        route, kind = self._route(runtime, version, inputs)
        if trace is not None:
            trace.route_kind = kind
        if runtime.features is not None:
            if trace is not None:
                trace.join_started_at = time.monotonic()
            inputs, missing = await runtime.features.join(inputs, self.online_store, trace)
            if trace is not None:
                trace.joined_at = time.monotonic()
            if missing is not None:
                return await self._fallback(runtime, inputs, _FEATURES, missing, 0, trace)
        coerced = runtime.plain.accept(inputs) if runtime.plain is not None else None
        if coerced is None:
            try:
                coerced = runtime.contract.coerce(inputs)
            except ContractViolation as exc:
                exc.message = one_line(exc)
                raise
        if not _has_rows(coerced):
            raise InvalidSpec(
                "a request needs at least one row",
                details=[{"field": "inputs", "problem": "the batch dimension is 0"}],
            )
        if runtime.endpoint.tier in self.fallback_tiers and runtime.has_fallback:
            degraded = Overloaded(f"tier '{runtime.endpoint.tier}' is degraded to its fallback")
            return await self._fallback(runtime, coerced, _DEGRADED, degraded, 0, trace)
        result = await self._run(runtime, route, coerced, deadline, 0, trace)
        if runtime.shadows and result.fallback_reason is None:
            self.shadows.send(runtime, route, coerced, result.outputs)
        if requested_outputs:
            result.outputs = {name: result.outputs[name] for name in requested_outputs}
        return result

    def _route(
        self, runtime: EndpointRuntime, version: str | None, inputs: Mapping[str, Array]
    ) -> tuple[RouteRuntime, str]:
        """The route and how it was chosen (``stable`` is the first route, ``canary`` any
        other, when picked by weight)."""
        if version is not None:
            route = runtime.route_for_version(version)
            if route is None:
                raise NotFound(
                    f"model '{runtime.name}' has no version '{version}'",
                    details=[{"field": "version", "problem": f"one of {runtime.versions}"}],
                )
            return route, "pinned"
        key = runtime.sticky_key
        if key is not None:
            column = inputs.get(key)
            if column is not None and column.size:
                point = key_point(_key_text(column.flat[0]))
                return runtime.routes[runtime.chooser.pick_at(point)], "sticky"
        index = runtime.chooser.pick()
        return runtime.routes[index], "stable" if index == 0 else "canary"

    async def _run(
        self,
        runtime: EndpointRuntime,
        route: RouteRuntime,
        inputs: Arrays,
        deadline: float,
        depth: int,
        trace: RequestTrace | None,
    ) -> Result:
        config = self.breaker
        if trace is not None:
            trace.route = route
        now = self._monotonic()
        # the pool's revivals let an open breaker probe as soon as a replica is warm again
        allowed, route.breaker = admit(route.breaker, config, now, route.target.pool.revivals)
        if not allowed:
            error: ModelplaneError = WorkerFailed(
                f"the circuit of route '{route.ref}' is open",
                details=[{"field": "route", "problem": "too many recent failures"}],
            )
            route.target.stats.failed(None)
            return await self._fallback(runtime, inputs, _OPEN, error, depth, trace)
        target = route.target
        try:
            outputs = await target.batcher.submit(inputs, deadline=deadline, trace=trace)
        except DeadlineExceeded as exc:
            error, reason = exc, FallbackReason.TIMEOUT
        except OutputViolation as exc:
            error, reason = exc, _VIOLATION
        except ContractViolation as exc:  # the batcher's row count check: the model's fault
            error, reason = OutputViolation(exc.message, details=exc.details), _VIOLATION
        except WorkerFailed as exc:
            error, reason = exc, FallbackReason.WORKER_FAILED
        else:
            target.stats.ok(self._monotonic() - now, outputs)
            self._succeeded(route)
            return Result(outputs, target.label, None, route.ref)
        target.stats.failed(self._monotonic() - now)
        route.breaker = record(
            route.breaker, config, self._monotonic(), successes=route.pending_ok, failures=1
        )
        route.pending_ok = 0
        return await self._fallback(runtime, inputs, reason, error, depth, trace)

    def _succeeded(self, route: RouteRuntime) -> None:
        """Count a success; while closed, successes are folded in every quarter bucket only,
        since a closed breaker needs them only as the denominator of the next failure."""
        now = self._monotonic()
        if route.breaker.state is _CLOSED:
            route.pending_ok += 1
            if now < route.flush_at:
                return
            route.flush_at = now + self.breaker.bucket_s / 4
            successes, route.pending_ok = route.pending_ok, 0
        else:
            successes = 1
        route.breaker = record(route.breaker, self.breaker, now, successes=successes)

    async def _fallback(
        self,
        runtime: EndpointRuntime,
        inputs: Arrays,
        reason: FallbackReason,
        error: ModelplaneError,
        depth: int,
        trace: RequestTrace | None,
    ) -> Result:
        fallback = runtime.fallback
        if trace is not None:
            trace.cause = one_line(error)
            trace.route_kind = "fallback"
        if runtime.static is not None:
            rows = len(next(iter(inputs.values())))
            return Result(runtime.static.outputs(rows), None, reason.value, "fallback")
        if fallback.kind is FallbackKind.ENDPOINT and depth < _MAX_FALLBACK_DEPTH:
            other = self.endpoint(str(fallback.endpoint))
            # A fallback is there to answer: it gets its own time budget from now.
            deadline = time.monotonic() + other.timeout_s
            coerced = other.contract.coerce(inputs)
            route = other.routes[other.chooser.pick()]
            result = await self._run(other, route, coerced, deadline, depth + 1, trace)
            result.fallback_reason = result.fallback_reason or reason.value
            result.route = "fallback"
            return result
        raise error


_VIOLATION = FallbackReason.CONTRACT_VIOLATION
_OPEN = FallbackReason.CIRCUIT_OPEN
_FEATURES = FallbackReason.FEATURES_UNAVAILABLE
_DEGRADED = FallbackReason.DEGRADED


def _key_text(value: Any) -> str:
    """The same text for a key however it came: BYTES tensors carry bytes, records str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value.item() if hasattr(value, "item") else value)


def _has_rows(inputs: Arrays) -> bool:
    return all(array.ndim == 0 or array.shape[0] > 0 for array in inputs.values())


def _check_rows(runtime: EndpointRuntime, inputs: Mapping[str, Array], default: int) -> None:
    """Refuse a request of more rows than the contract's ``max_rows`` (else ``default``)
    before any work scales with its rows: one request is one batch on one worker."""
    rows = max((len(a) for a in inputs.values() if a.ndim > 0), default=0)
    declared = runtime.endpoint.contract.max_rows
    limit = default if declared is None else declared
    if rows > limit:
        setting = "contract max_rows" if declared is not None else "the platform's max_rows"
        raise PayloadTooLarge(
            f"the request has {rows} rows; endpoint '{runtime.name}' takes at most {limit}"
            f" ({setting})",
            details=[{"field": "inputs", "problem": f"{rows} rows, over {setting} ({limit})"}],
        )


def _check_requested(runtime: EndpointRuntime, requested: Collection[str]) -> None:
    known = runtime.output_names
    if known is None:
        return
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise InvalidSpec(
            f"unknown requested output(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            details=[
                {"field": f"outputs '{n}'", "problem": "not in the contract"} for n in unknown
            ],
        )

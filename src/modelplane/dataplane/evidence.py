"""Where the gateway hands what it kept of a request: the prediction sink, and the record.

The gateway keeps every error and fallback and asks the sink whether to keep a plain
success (:meth:`PredictionSink.sampled`); a success not sampled is offered as a *brief*
record, which the sink keeps for a bounded time only. Records are built after the response
went out, from the request's :class:`~modelplane.observe.records.RequestTrace`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from modelplane.dataplane.endpoint_runtime import EndpointRuntime, RouteRuntime
from modelplane.observe.outcomes import Feedback
from modelplane.observe.records import PredictionRecord, RequestTrace, split_latency

__all__ = ["FeedbackSink", "PredictionSink", "prediction_record"]


class PredictionSink(Protocol):
    """Takes kept predictions; called on the event loop, so every method must return fast
    and never block (:class:`~modelplane.observe.predlog.PredictionLog` queues)."""

    def sampled(self) -> bool:
        """Keep this successful, non-fallback request?"""
        ...

    def offer(self, record: PredictionRecord) -> None:
        """Take ``record``; drop it rather than wait."""
        ...

    async def start(self) -> None:
        """Called once the gateway's loop runs."""
        ...

    async def stop(self) -> None:
        """Called when the gateway stops: write what is left."""
        ...


class FeedbackSink(Protocol):
    """Takes outcomes of earlier answers (:class:`~modelplane.observe.outcomes.OutcomeStore`);
    blocking, so the gateway calls it from a thread."""

    def ingest(self, endpoint: str, items: Sequence[Feedback], *, source: str = "api") -> int:
        """Store ``items``; how many were stored."""
        ...


def prediction_record(
    runtime: EndpointRuntime,
    request_id: str,
    trace: RequestTrace,
    *,
    status: int,
    fallback_reason: str | None = None,
    error_code: str | None = None,
    detail: str | None = None,
    brief: bool = False,
    outputs: Any = None,
) -> PredictionRecord:
    """The record of a request whose response was just sent; ``brief`` for a success
    that was not sampled (no features: they are the costly part). ``outputs``: what the
    model answered, kept for the outcome join."""
    latency = split_latency(trace, time.monotonic())
    contract = runtime.endpoint.contract
    ref = label = digest = None
    route = trace.route
    if isinstance(route, RouteRuntime):
        source = route.target.source
        ref, label, digest = route.ref, source.label, str(source.digest)
    return PredictionRecord(
        request_id=request_id,
        at=time.time(),
        endpoint=runtime.name,
        contract=contract.name,
        contract_version=contract.version,
        status=status,
        latency=latency,
        model_version=label,
        digest=digest,
        route=ref,
        route_kind=trace.route_kind,
        fallback_reason=fallback_reason,
        error_code=error_code,
        detail=detail if detail is not None else trace.cause,
        batch_size=trace.batch.rows if trace.batch is not None else None,
        features=None if brief else trace.features,
        outputs=outputs,
        feature_sets=trace.features.sets if trace.features is not None else (),
        brief=brief,
    )

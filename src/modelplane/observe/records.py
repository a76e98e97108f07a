"""What the data plane notes about one request, and the prediction record made from it.

:class:`RequestTrace` rides along with a request through the gateway, the handler and the
batcher. It is the request's own per-request object (the gateway's header scan subclasses
it), so timing a request allocates nothing extra; the batcher shares one
:class:`BatchTiming` between every request of a batch. Only a request that is kept (sampled,
failed, or answered by a fallback) becomes a :class:`PredictionRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BatchTiming",
    "FeatureEvidence",
    "LatencySplit",
    "PredictionRecord",
    "RequestTrace",
    "split_latency",
]


class BatchTiming:
    """When one batch left the batcher and came back (monotonic seconds), and its rows."""

    __slots__ = ("dispatched_at", "returned_at", "rows")

    def __init__(self, dispatched_at: float, rows: int) -> None:
        self.dispatched_at = dispatched_at
        self.returned_at = 0.0
        """0.0 until the worker answered (or failed)."""
        self.rows = rows


@dataclass(frozen=True, slots=True)
class FeatureEvidence:
    """What the request-time join fed the model.

    ``ages_s`` maps ``set:version/feature`` to the oldest age (seconds) of its values over
    the batch, ``None`` when a value was missing: the oldest is what a freshness question
    is about, and one number per feature keeps a kept record small at any batch size.
    """

    sets: tuple[str, ...]
    ages_s: dict[str, float | None]
    defaulted: tuple[str, ...] = ()
    from_request: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "sets": list(self.sets),
            "ages_s": self.ages_s,
            "defaulted": list(self.defaulted),
            "from_request": list(self.from_request),
        }


@dataclass(slots=True, kw_only=True)
class RequestTrace:
    """Monotonic timestamps and choices of one request, filled in as it moves along.

    ``route`` is the data plane's route object (the observe layer does not know its type).
    """

    started_at: float = 0.0
    enqueued_at: float = 0.0
    batch: BatchTiming | None = None
    route: Any = None
    route_kind: str = "stable"
    """How the route was chosen or what it is: stable, canary, sticky, pinned, fallback."""
    cause: str | None = None
    """Why a fallback answered: the failure's message."""
    features: FeatureEvidence | None = None
    """Set by the feature join, for endpoints that bind feature sets."""
    join_started_at: float = 0.0
    joined_at: float = 0.0
    """When the feature join began and ended (0.0: no join), for traces."""


@dataclass(frozen=True, slots=True)
class LatencySplit:
    """Milliseconds: before the batcher, waiting in it, on the worker, and in all."""

    queue_ms: float
    batch_ms: float
    compute_ms: float
    total_ms: float


def split_latency(trace: RequestTrace, ended_at: float) -> LatencySplit:
    """Split ``started_at .. ended_at``; parts never overlap, so they add up to at most total.

    A request that never reached the batcher (a static fallback, a rejected input) spends
    all of it in ``queue``; one answered before its batch came back (a deadline) counts
    the worker's time up to ``ended_at``.
    """
    start = trace.started_at
    total = max(0.0, ended_at - start)
    if not trace.enqueued_at:
        return LatencySplit(_ms(total), 0.0, 0.0, _ms(total))
    enqueued = min(max(trace.enqueued_at, start), ended_at)
    batch = trace.batch
    if batch is None or batch.dispatched_at < enqueued:
        return LatencySplit(_ms(enqueued - start), _ms(ended_at - enqueued), 0.0, _ms(total))
    dispatched = min(batch.dispatched_at, ended_at)
    returned = min(batch.returned_at or ended_at, ended_at)
    return LatencySplit(
        _ms(enqueued - start), _ms(dispatched - enqueued), _ms(returned - dispatched), _ms(total)
    )


def _ms(seconds: float) -> float:
    return max(0.0, seconds) * 1000


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One row of the prediction log."""

    request_id: str
    at: float
    """Wall-clock time (Unix seconds) the response was sent."""
    endpoint: str
    contract: str
    contract_version: int
    status: int
    latency: LatencySplit
    model_version: str | None = None
    digest: str | None = None
    route: str | None = None
    route_kind: str = "stable"
    fallback_reason: str | None = None
    error_code: str | None = None
    detail: str | None = None
    """The error's message, or what made the fallback answer."""
    batch_size: int | None = None
    features: FeatureEvidence | None = None
    outputs: Any = None
    """What the model answered (named arrays, one row per instance), for the outcome
    join; ``None`` for errors and fallbacks. Held as the arrays the response was encoded
    from: converting them waits for the writer's thread (see :mod:`.predlog`)."""
    feature_sets: tuple[str, ...] = ()
    """``set:version`` of each feature set the request-time join read."""
    brief: bool = False
    """A plain success that was not sampled: kept for a bounded time in the request log
    only, so ``explain`` can answer for any request (see :mod:`modelplane.observe.predlog`)."""

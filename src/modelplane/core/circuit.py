"""A circuit breaker per route, as a pure state machine over an injected ``now``.

States and moves:

* **closed**: every request is admitted; outcomes are counted in a sliding window of
  ``window_s`` seconds, kept as ``buckets`` fixed buckets so that recording costs the same
  whatever the traffic. When the window holds at least ``min_requests`` outcomes and the
  share of errors reaches ``error_rate``, the breaker **opens**.
* **open**: nothing is admitted (callers get the fallback) until ``cool_down_s`` has passed
  since it opened; the next request then moves it to **half-open** and is admitted as a probe.
  Sooner when the route came back: a caller passes ``ready_epoch``, a count its pool moves
  each time it goes from no ready replica to one. A move seen while open means the replicas
  whose loss opened the breaker (or some of them) are warm again, so the breaker goes
  half-open at once instead of refusing traffic to a route that can serve it.
* **half-open**: at most ``probes`` requests are in flight as probes. A probe that succeeds
  closes the breaker with an empty window; one that fails opens it again. A probe whose
  outcome never comes (its caller went away) is replaced after another ``cool_down_s``.

Outcomes that arrive while open (answers to requests admitted before it opened) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "admit", "record"]


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    """Traffic flows; errors are counted."""
    OPEN = "open"
    """Traffic is refused (the fallback answers) until the cool-down ends."""
    HALF_OPEN = "half_open"
    """A few probes test whether the route has recovered."""


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it recovers."""

    window_s: float = 10.0
    buckets: int = 10
    min_requests: int = 20
    """Fewer outcomes than this in the window never open the breaker."""
    error_rate: float = 0.5
    """Share of errors in the window, in ``(0, 1]``, that opens the breaker."""
    cool_down_s: float = 5.0
    probes: int = 1

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.cool_down_s < 0:
            raise ValueError("window_s must be positive and cool_down_s not negative")
        if self.buckets < 1 or self.min_requests < 1 or self.probes < 1:
            raise ValueError("buckets, min_requests and probes must be at least 1")
        if not 0 < self.error_rate <= 1:
            raise ValueError("error_rate must be in (0, 1]")

    @property
    def bucket_s(self) -> float:
        return self.window_s / self.buckets


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """A breaker's whole state; ``ok`` and ``errors`` are per bucket, oldest first."""

    state: BreakerState = BreakerState.CLOSED
    epoch: int = 0
    """Index (``floor(now / bucket_s)``) of the newest bucket."""
    ok: tuple[int, ...] = ()
    errors: tuple[int, ...] = ()
    since: float = -math.inf
    """When it last opened, or when the current probes were let through."""
    probes_out: int = 0
    ready_epoch: int = 0
    """The route's ``ready_epoch`` when last asked (see :func:`admit`)."""

    @property
    def counts(self) -> tuple[int, int]:
        """``(successes, errors)`` in the window as of the last record."""
        return sum(self.ok), sum(self.errors)


def admit(
    breaker: CircuitBreaker, config: BreakerConfig, now: float, ready_epoch: int | None = None
) -> tuple[bool, CircuitBreaker]:
    """May a request go to the route now? And the breaker after letting it (or not).

    ``ready_epoch``, when given, is the route's count of returns from no ready replica to
    one; a breaker that is open when it moves goes half-open now (see the module doc)."""
    if ready_epoch is not None and ready_epoch != breaker.ready_epoch:
        breaker = _revived(breaker, ready_epoch, now)
    state = breaker.state
    if state is BreakerState.CLOSED:
        return True, breaker
    cooled = now - breaker.since >= config.cool_down_s
    if state is BreakerState.OPEN:
        if not cooled:
            return False, breaker
        return True, replace(breaker, state=BreakerState.HALF_OPEN, since=now, probes_out=1)
    if breaker.probes_out < config.probes:
        return True, replace(breaker, probes_out=breaker.probes_out + 1)
    if cooled:
        # the probes' outcomes never came: their callers went away; try a fresh one
        return True, replace(breaker, since=now, probes_out=1)
    return False, breaker


def _revived(breaker: CircuitBreaker, ready_epoch: int, now: float) -> CircuitBreaker:
    if breaker.state is BreakerState.OPEN:
        return replace(
            breaker, state=BreakerState.HALF_OPEN, since=now, probes_out=0, ready_epoch=ready_epoch
        )
    return replace(breaker, ready_epoch=ready_epoch)


def record(
    breaker: CircuitBreaker,
    config: BreakerConfig,
    now: float,
    *,
    successes: int = 0,
    failures: int = 0,
) -> CircuitBreaker:
    """Fold outcomes of admitted requests into the breaker.

    Counts let a caller fold many successes at once (the gateway batches them between
    failures, to keep the hot path cheap); a failure is folded with the successes before it.
    """
    state = breaker.state
    if state is BreakerState.OPEN or (successes <= 0 and failures <= 0):
        return breaker
    seen = breaker.ready_epoch
    if state is BreakerState.HALF_OPEN:
        if failures:
            return CircuitBreaker(state=BreakerState.OPEN, since=now, ready_epoch=seen)
        return CircuitBreaker(ready_epoch=seen)
    ok, errors, epoch = _roll(breaker, config, now)
    ok = (*ok[:-1], ok[-1] + successes)
    if not failures:
        return CircuitBreaker(epoch=epoch, ok=ok, errors=errors, ready_epoch=seen)
    errors = (*errors[:-1], errors[-1] + failures)
    bad = sum(errors)
    total = bad + sum(ok)
    if total >= config.min_requests and bad >= config.error_rate * total:
        return CircuitBreaker(state=BreakerState.OPEN, since=now, ready_epoch=seen)
    return CircuitBreaker(epoch=epoch, ok=ok, errors=errors, ready_epoch=seen)


def _roll(
    breaker: CircuitBreaker, config: BreakerConfig, now: float
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """The window's buckets moved forward to ``now``: expired buckets dropped, zeros added."""
    size = config.buckets
    epoch = math.floor(now / config.bucket_s)
    shift = epoch - breaker.epoch
    if shift == 0 and len(breaker.ok) == size:
        return breaker.ok, breaker.errors, epoch
    if shift < 0 and len(breaker.ok) == size:
        # a clock read before the newest bucket: count it in the newest rather than drop it
        return breaker.ok, breaker.errors, breaker.epoch
    if shift >= size or len(breaker.ok) != size:
        zeros = (0,) * size
        return zeros, zeros, epoch
    pad = (0,) * shift
    return (*breaker.ok[shift:], *pad), (*breaker.errors[shift:], *pad), epoch

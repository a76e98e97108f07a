"""The loop every controller runs: one pass now, then one every interval, until stopped.

A controller must outlive whatever goes wrong in one pass: a state store that restarted
(PostgreSQL terminated the connection), a busy SQLite, a full disk, a bug. So a pass that
raises any :class:`Exception` is logged with the controller's name and the loop goes on,
backing off: after ``n`` failures in a row it waits ``interval_s * 2 ** (n - 1)``, capped at
``max_backoff_s``, and the first pass that succeeds resets it. Controllers are
level-triggered, so a later pass redoes what a failed one left. Only cancellation
(``BaseException``) ends the loop early.

Logs are thinned so a long outage does not flood them: the 1st, 2nd, 4th, 8th... failure of
a streak is logged (the first with its traceback when it is not a
:class:`~modelplane.errors.ModelplaneError`), and the pass that ends a streak says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from modelplane.errors import ModelplaneError

__all__ = ["backoff_s", "every"]

DEFAULT_MAX_BACKOFF_S = 10.0


def backoff_s(interval_s: float, failures: int, max_backoff_s: float) -> float:
    """How long to wait before the next pass after ``failures`` failed passes in a row."""
    if failures <= 0:
        return interval_s
    return min(max(max_backoff_s, interval_s), interval_s * 2.0 ** min(failures - 1, 32))


def _worth_logging(failures: int) -> bool:
    """True for the 1st, 2nd, 4th, 8th... failure of a streak."""
    return failures & (failures - 1) == 0


async def every(
    stop: asyncio.Event,
    interval_s: float,
    one_pass: Callable[[], Awaitable[Any]],
    *,
    log: logging.Logger,
    what: str,
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
) -> None:
    """Await ``one_pass()`` every ``interval_s`` until ``stop`` is set; see the module doc."""
    failures = 0
    while not stop.is_set():
        try:
            await one_pass()
        except Exception as exc:  # whatever one pass hit, the controller must outlive it
            failures += 1
            if _worth_logging(failures):
                expected = isinstance(exc, ModelplaneError)
                log.warning(
                    "%s failed (%d in a row, next try in %.3gs): %s: %s",
                    what,
                    failures,
                    backoff_s(interval_s, failures, max_backoff_s),
                    type(exc).__name__,
                    exc,
                    exc_info=None if expected or failures > 1 else exc,
                )
        else:
            if failures:
                log.warning("%s recovered after %d failed passes", what, failures)
            failures = 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                stop.wait(), timeout=backoff_s(interval_s, failures, max_backoff_s)
            )

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

:func:`keep_running` guards a whole controller the same way, for a process that runs several
(``modelplane up``): one that raises or returns before it was asked to stop is logged and
started again after a backoff, and the others, and the gateway, never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from modelplane.errors import ModelplaneError

__all__ = ["backoff_s", "every", "keep_running"]

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


async def keep_running(
    stop: asyncio.Event,
    run: Callable[[asyncio.Event], Awaitable[Any]],
    *,
    log: logging.Logger,
    what: str,
    retry_s: float = 1.0,
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
) -> None:
    """Await ``run(stop)`` until ``stop`` is set, starting it again (after a backoff) each
    time it raises an :class:`Exception` or returns early. Never raises but cancellation."""
    loop = asyncio.get_running_loop()
    failures = 0
    while not stop.is_set():
        began = loop.time()
        try:
            await run(stop)
        except Exception as exc:  # one controller's end must not end the process
            problem: str = f"{type(exc).__name__}: {exc}"
            error: BaseException | None = exc
        else:
            if stop.is_set():
                return
            problem, error = "returned before it was asked to stop", None
        # a run that lasted well past the longest backoff was a success, then a new failure
        failures = 1 if loop.time() - began > 6 * max_backoff_s else failures + 1
        delay = backoff_s(retry_s, failures, max_backoff_s)
        if _worth_logging(failures):
            log.error(
                "%s ended (%d in a row), restarting in %.3gs: %s",
                what,
                failures,
                delay,
                problem,
                exc_info=error if failures == 1 else None,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)

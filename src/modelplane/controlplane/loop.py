"""The loop every controller runs: one pass now, then one every interval, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from modelplane.errors import ModelplaneError

__all__ = ["every"]


async def every(
    stop: asyncio.Event,
    interval_s: float,
    one_pass: Callable[[], Awaitable[Any]],
    *,
    log: logging.Logger,
    what: str,
) -> None:
    """Await ``one_pass()`` every ``interval_s`` until ``stop`` is set. A pass that fails
    with a :class:`ModelplaneError` is logged and the next one comes on time: controllers
    are level-triggered, so a later pass redoes what a failed one left."""
    while not stop.is_set():
        try:
            await one_pass()
        except ModelplaneError as exc:
            log.warning("%s failed: %s", what, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)

"""Sending shadow copies: off the caller's path, coalesced, bounded, compared.

A copy costs the primary path one list append. Copies wait up to ``linger_s`` (or until
``flush_rows`` rows) in the shadow's buffer and go to its model version as one batch in a
task of their own: a shadow's answers are needed by no caller, so a few milliseconds of
waiting buy one worker round trip per batch instead of one per request, which is what a
shadow otherwise costs a busy machine. Each copy is still counted on its own: in the shadow
version's route evidence (for the rollout gates) and in the comparison with the answer the
caller got. As in the primary path, a batch that fails fails every copy in it.

Copies are dropped, and counted, when the shadow already holds ``max_inflight`` copies
(buffered or sent) or its batcher sheds them: a shadow never queues behind itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.dataplane.endpoint_runtime import EndpointRuntime, RouteRuntime, ShadowRuntime
from modelplane.errors import ModelplaneError, Overloaded

__all__ = ["ShadowSender"]

Arrays = dict[str, npt.NDArray[Any]]
Copy = tuple[Arrays, Arrays]
"""The request's inputs and the outputs the caller got."""


class ShadowSender:
    """Copies requests to an endpoint's shadows; one per inference handler."""

    def __init__(self, linger_s: float = 0.005, flush_rows: int = 64) -> None:
        self.linger_s = linger_s
        self.flush_rows = flush_rows
        self._tasks: set[asyncio.Task[None]] = set()

    def send(
        self, runtime: EndpointRuntime, route: RouteRuntime, inputs: Arrays, primary: Arrays
    ) -> None:
        """Buffer a copy for each shadow that samples this request (never waits)."""
        for shadow in runtime.shadows:
            if shadow.target is route.target:
                continue  # this request went to the shadowed version itself
            if shadow.percent < 100.0 and runtime.rng.random() * 100.0 >= shadow.percent:
                continue
            if shadow.inflight + len(shadow.buffer) >= shadow.max_inflight:
                shadow.comparison.dropped += 1
                continue
            shadow.buffer.append((inputs, primary))
            shadow.buffered_rows += _rows(inputs)
            if shadow.buffered_rows >= self.flush_rows:
                self._flush(runtime, shadow)
            elif shadow.timer is None:
                loop = asyncio.get_running_loop()
                shadow.timer = loop.call_later(self.linger_s, self._flush, runtime, shadow)

    def _flush(self, runtime: EndpointRuntime, shadow: ShadowRuntime) -> None:
        if shadow.timer is not None:
            shadow.timer.cancel()
            shadow.timer = None
        copies, shadow.buffer, shadow.buffered_rows = shadow.buffer, [], 0
        if not copies:
            return
        shadow.inflight += len(copies)
        task = asyncio.get_running_loop().create_task(self._run(runtime, shadow, copies))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, runtime: EndpointRuntime, shadow: ShadowRuntime, copies: list[Copy]
    ) -> None:
        try:
            joined = _concatenate([inputs for inputs, _ in copies]) if len(copies) > 1 else None
            if len(copies) > 1 and joined is None:
                # shapes differ (variable dimensions): one call per copy
                await asyncio.gather(*(self._call(runtime, shadow, [c], c[0]) for c in copies))
            else:
                await self._call(runtime, shadow, copies, joined or copies[0][0])
        finally:
            shadow.inflight -= len(copies)

    async def _call(
        self, runtime: EndpointRuntime, shadow: ShadowRuntime, copies: list[Copy], inputs: Arrays
    ) -> None:
        target, comparison = shadow.target, shadow.comparison
        started = time.monotonic()
        try:
            outputs = await target.batcher.submit(inputs, deadline=started + runtime.timeout_s)
        except Overloaded:
            comparison.dropped += len(copies)
            return
        except ModelplaneError:
            latency = time.monotonic() - started
            for _ in copies:
                target.stats.failed(latency)
            comparison.failed += len(copies)
            return
        latency = time.monotonic() - started
        start = 0
        for copy_inputs, primary in copies:
            end = start + _rows(copy_inputs)
            answer = outputs if len(copies) == 1 else _rows_of(outputs, start, end)
            target.stats.ok(latency, answer)
            comparison.compare(primary, answer)
            start = end


def _rows(inputs: Arrays) -> int:
    first = next(iter(inputs.values()), None)
    return 1 if first is None or first.ndim == 0 else len(first)


def _rows_of(outputs: Arrays, start: int, end: int) -> Arrays:
    return {name: array[start:end] for name, array in outputs.items()}


def _concatenate(batches: list[Arrays]) -> Arrays | None:
    """The copies' inputs as one batch; None when their names or trailing shapes differ."""
    names = batches[0].keys()
    if any(batch.keys() != names for batch in batches):
        return None
    try:
        return {name: np.concatenate([batch[name] for batch in batches]) for name in names}
    except ValueError:
        return None

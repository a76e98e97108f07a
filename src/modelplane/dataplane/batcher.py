"""Adaptive batching for one model version, on asyncio.

Callers :meth:`Batcher.submit` named arrays whose leading dimension is the row count. One
loop task decides when to flush with :func:`modelplane.core.batching.decide_flush`, joins
the queued requests along the batch axis, calls ``predict_batch`` (the worker pool), and
hands each caller its own rows back, as views, in order.

Bounds: the queue holds at most ``max_queue_rows`` rows (beyond that :class:`Overloaded`),
at most ``max_inflight_batches`` batches run at once, and every request has a deadline: one
whose deadline passes while queued is failed with :class:`DeadlineExceeded` and never sent,
and a caller never waits past its deadline.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.core.batching import (
    ArrivalStats,
    BatchingConfig,
    QueueState,
    decide_flush,
    observe_arrival,
)
from modelplane.errors import ContractViolation, DeadlineExceeded, InvalidSpec, Overloaded
from modelplane.observe.records import BatchTiming, RequestTrace
from modelplane.types import Clock, SystemClock

__all__ = ["Batcher", "BatcherConfig", "PredictBatch"]

Array = npt.NDArray[Any]
Arrays = dict[str, Array]

PredictBatch = Callable[[Arrays, float], Awaitable[Arrays]]
"""``predict_batch(arrays, timeout_s) -> arrays``: run one batch within ``timeout_s``."""

_Layout = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class BatcherConfig:
    """Bounds and batching settings of one model version's batcher."""

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    max_queue_rows: int = 4096
    max_inflight_batches: int = 1
    """Batches sent at once; set it to the number of replicas."""
    default_timeout_s: float = 1.0
    """Deadline of a request that brings none."""


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: Mapping[str, Array]
    rows: int
    layout: _Layout
    future: asyncio.Future[Arrays]
    deadline: float
    enqueued_at: float
    trace: RequestTrace | None


@dataclass(slots=True)
class _Stats:
    arrivals: ArrivalStats = field(default_factory=ArrivalStats)
    batch_latency_s: float = 0.0
    batches: int = 0
    rows: int = 0
    busy_s: float = 0.0


class Batcher:
    """Collects requests for one model version into batches; see the module docstring."""

    def __init__(
        self,
        predict_batch: PredictBatch,
        config: BatcherConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._predict = predict_batch
        self.config = config or BatcherConfig()
        self._clock = clock or SystemClock()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._inflight: set[asyncio.Task[None]] = set()
        self._stats = _Stats()
        self._wake: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def inflight_batches(self) -> int:
        return len(self._inflight)

    @property
    def busy_seconds(self) -> float:
        """Seconds batches have been out on workers, summed (overlapping batches each count):
        over ``max_inflight_batches`` replicas, its rate is their utilization."""
        return self._stats.busy_s

    @property
    def mean_batch_rows(self) -> float:
        """Rows per batch sent so far (a gauge for metrics and tests)."""
        return self._stats.rows / self._stats.batches if self._stats.batches else 0.0

    def start(self) -> None:
        """Start the flush loop; call from inside the running event loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking requests, send what is queued, and wait for running batches."""
        self._closing = True
        self._notify()
        pending: list[asyncio.Task[None]] = [*self._inflight]
        if self._loop_task is not None:
            pending.append(self._loop_task)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)

    async def submit(
        self,
        inputs: Mapping[str, Array],
        *,
        deadline: float | None = None,
        trace: RequestTrace | None = None,
    ) -> Arrays:
        """Predict ``inputs`` (rows along axis 0) as part of a batch; ``deadline`` is monotonic.
        ``trace`` learns when the request was queued, sent and answered."""
        rows, layout = _describe(inputs)
        now = self._clock.monotonic()
        self._admit(rows)
        deadline = now + self.config.default_timeout_s if deadline is None else deadline
        if deadline <= now:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        if self._loop_task is None:
            self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        self._queue.append(_Pending(inputs, rows, layout, future, deadline, now, trace))
        if trace is not None:
            trace.enqueued_at = now
        self._queued_rows += rows
        self._stats.arrivals = observe_arrival(self._stats.arrivals, now, self.config.batching)
        self._notify()
        # One timer handle per request: asyncio.wait_for costs a task wrapper, a waiter future
        # and callbacks on every call, which shows on a path served tens of thousands times a
        # second. An expired future is done, so the flush loop never sends it.
        timer = loop.call_later(deadline - now, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _admit(self, rows: int) -> None:
        if self._closing:
            raise Overloaded("the batcher is stopping", retry_after_s=1.0)
        if self._queue and self._queued_rows + rows > self.config.max_queue_rows:
            raise Overloaded(
                f"queue full ({self._queued_rows} rows waiting)",
                retry_after_s=self._retry_after(),
            )

    def _retry_after(self) -> float:
        batches_ahead = math.ceil(self._queued_rows / self.config.batching.max_batch_size)
        estimate = batches_ahead * self._stats.batch_latency_s / self.config.max_inflight_batches
        return min(5.0, max(0.001, estimate))

    # ------------------------------------------------------------------ the flush loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._closing and not self._queue):
            wait_s = self._flush_what_is_due()
            self._wake = loop.create_future()
            timer = None if math.isinf(wait_s) else loop.call_later(wait_s, self._notify)
            try:
                await self._wake
            finally:
                if timer is not None:
                    timer.cancel()
                self._wake = None

    def _flush_what_is_due(self) -> float:
        """Dispatch every batch that is due now; return how long to wait before rechecking."""
        config = self.config.batching
        while True:
            now = self._clock.monotonic()
            state = QueueState(
                queued_rows=self._queued_rows,
                oldest_enqueued_at=self._queue[0].enqueued_at if self._queue else None,
                worker_idle=self._has_slot(),
                arrivals=self._stats.arrivals,
            )
            decision = decide_flush(state, config, now)
            flush = decision.flush_now or (self._closing and bool(self._queue))
            if not flush:
                return decision.wait_s
            if not self._has_slot():
                return math.inf  # a finishing batch wakes us
            batch = self._take(decision.take or config.max_batch_size, now)
            if batch:
                self._dispatch(batch)

    def _has_slot(self) -> bool:
        return len(self._inflight) < self.config.max_inflight_batches

    def _take(self, max_rows: int, now: float) -> list[_Pending]:
        """Whole requests from the head, up to ``max_rows`` rows, of one input layout."""
        batch: list[_Pending] = []
        rows = 0
        queue = self._queue
        while queue:
            head = queue[0]
            if batch and (rows + head.rows > max_rows or head.layout != batch[0].layout):
                break
            queue.popleft()
            self._queued_rows -= head.rows
            if head.future.done():
                continue  # its caller gave up: never send it
            if head.deadline <= now:
                head.future.set_exception(
                    DeadlineExceeded("the request's deadline passed while it was queued")
                )
                continue
            batch.append(head)
            rows += head.rows
        return batch

    def _dispatch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            arrays = dict(batch[0].inputs)
        else:
            arrays = {
                name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs
            }
        timeout_s = max(p.deadline for p in batch) - self._clock.monotonic()
        task = asyncio.get_running_loop().create_task(self._run_batch(batch, arrays, timeout_s))
        self._inflight.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._notify()

    async def _run_batch(self, batch: list[_Pending], arrays: Arrays, timeout_s: float) -> None:
        started = self._clock.monotonic()
        total = sum(p.rows for p in batch)
        # One timing object per batch, shared by its requests' traces.
        timing = BatchTiming(started, total)
        for pending in batch:
            if pending.trace is not None:
                pending.trace.batch = timing
        try:
            outputs = await self._predict(arrays, timeout_s)
            _check_rows(outputs, total)
        except asyncio.CancelledError:
            _fail(batch, Overloaded("the batcher stopped before the batch finished"))
            raise
        except Exception as exc:
            _fail(batch, exc)
            return
        finally:
            timing.returned_at = self._clock.monotonic()
            self._record(timing.returned_at - started, total)
        start = 0
        for pending in batch:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end

    def _record(self, latency_s: float, rows: int) -> None:
        stats = self._stats
        stats.batch_latency_s = (
            latency_s if not stats.batches else (0.2 * latency_s + 0.8 * stats.batch_latency_s)
        )
        stats.batches += 1
        stats.rows += rows
        stats.busy_s += latency_s

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)


def _describe(inputs: Mapping[str, Array]) -> tuple[int, _Layout]:
    """Row count and layout (names, dtypes, trailing shapes) of one request's inputs."""
    if not inputs:
        raise InvalidSpec("a request needs at least one input")
    rows = -1
    layout: list[tuple[str, str, tuple[int, ...]]] = []
    for name, array in inputs.items():
        if array.ndim == 0:
            raise InvalidSpec(
                f"input '{name}' has no batch dimension",
                details=[{"field": name, "problem": "a scalar; rows go along axis 0"}],
            )
        if rows not in (-1, array.shape[0]):
            raise InvalidSpec(
                f"inputs disagree on the row count ({rows} and {array.shape[0]})",
                details=[{"field": name, "problem": f"{array.shape[0]} rows, others have {rows}"}],
            )
        rows = array.shape[0]
        layout.append((name, array.dtype.str, array.shape[1:]))
    return rows, tuple(layout)


def _check_rows(outputs: Arrays, rows: int) -> None:
    bad = [
        {"field": name, "problem": f"shape {list(a.shape)}, expected {rows} rows"}
        for name, a in outputs.items()
        if a.ndim == 0 or a.shape[0] != rows
    ]
    if bad:
        raise ContractViolation("the model returned the wrong number of rows", details=bad)


def _expire(future: asyncio.Future[Arrays]) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded("no answer before the request's deadline"))


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)

"""The prediction log: a sample of requests, and every error and fallback, in the state store;
and the request log: a brief record of every other request, for a bounded time.

The gateway calls :meth:`PredictionLog.sampled` and :meth:`PredictionLog.offer` on its
event loop. ``offer`` appends to a bounded queue and never blocks or waits: a full queue
drops the record and counts it (evidence is worth less than a prediction). A background
task drains the queue in batches every ``flush_interval_s`` and writes them with
``asyncio.to_thread``, so the database never runs on the event loop; after enough new rows
it trims the table to the newest ``retain_rows``.

A success that was not sampled is offered as a *brief* record (no features, no detail):
those go to their own bounded queue and the ``request_log`` table, and rows older than
``request_retain_s`` are deleted, so ``modelplane explain`` can answer for any request of
the last hour by default without the sampled evidence being pushed out by plain traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from modelplane.errors import ModelplaneError
from modelplane.observe.explain import brief_row
from modelplane.observe.outcomes import insert_answers, trim_answers
from modelplane.observe.records import PredictionRecord
from modelplane.store.db import read_session, write_session
from modelplane.store.schema import PredictionRow, RequestRow

__all__ = [
    "PredictionLog",
    "PredictionLogConfig",
    "find_predictions",
    "find_requests",
    "trim_predictions",
    "trim_requests",
    "write_predictions",
    "write_requests",
]

log = logging.getLogger("modelplane.predlog")


@dataclass(frozen=True, slots=True)
class PredictionLogConfig:
    """How much evidence to keep, and how it is written."""

    sample_rate: float = 0.01
    """Share of successful, non-fallback requests kept; errors and fallbacks always are."""
    capacity: int = 10_000
    """Records waiting to be written at most; beyond that they are dropped (and counted)."""
    batch_size: int = 500
    """Rows per write transaction."""
    flush_interval_s: float = 0.5
    retain_rows: int = 100_000
    """Rows the table keeps; older ones are deleted."""
    keep_every_request: bool = True
    """Keep a brief record of every request not sampled, in the request log."""
    request_retain_s: float = 3600.0
    """How long the request log keeps a brief record."""
    request_capacity: int = 50_000
    """Brief records waiting to be written at most; beyond that they are dropped."""
    keep_answers: bool = True
    """Keep what models answered (outputs, feature-set versions) for the outcome join."""
    answer_retain_s: float = 90 * 86400.0
    """How long what a model answered is kept for the outcome join (labels that arrive
    later than this no longer join; see :mod:`modelplane.observe.outcomes`)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate {self.sample_rate} is not within [0, 1]")
        if min(self.capacity, self.batch_size, self.retain_rows, self.request_capacity) < 1:
            raise ValueError("capacities, batch_size and retain_rows must be positive")
        if self.request_retain_s <= 0 or self.answer_retain_s <= 0:
            raise ValueError("request_retain_s and answer_retain_s must be positive")


class PredictionLog:
    """The gateway's prediction sink over the state store; see the module docstring."""

    def __init__(
        self, engine: Engine, config: PredictionLogConfig | None = None, *, seed: int | None = None
    ) -> None:
        self.engine = engine
        self.config = config or PredictionLogConfig()
        self._rate = self.config.sample_rate
        self._random = random.Random(seed).random
        self._queue: deque[PredictionRecord] = deque()
        self._capacity = self.config.capacity
        self._brief: deque[PredictionRecord] = deque()
        self._brief_capacity = self.config.request_capacity if self.config.keep_every_request else 0
        self.dropped = 0
        """Records dropped because the queue was full, or because their write failed."""
        self.dropped_brief = 0
        """Brief records dropped the same ways."""
        self._requests_trimmed_at: float | None = None
        self._answers_trimmed_at: float | None = None
        self.written = 0
        self._since_trim = 0
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    # ------------------------------------------------------------------ hot path

    def sampled(self) -> bool:
        """Keep this successful request? (errors and fallbacks are kept without asking)."""
        return self._random() < self._rate

    def offer(self, record: PredictionRecord) -> None:
        """Queue ``record`` for writing; drop it (counted) when the queue is full."""
        if record.brief:
            if len(self._brief) < self._brief_capacity:
                self._brief.append(record)
            elif self.config.keep_every_request:
                self.dropped_brief += 1
            return
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            return
        self._queue.append(record)

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._brief)

    # ------------------------------------------------------------------ background

    async def start(self) -> None:
        """Start the flusher on the running loop (the one the gateway serves from)."""
        if self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(self._stop))

    async def stop(self) -> None:
        """Stop the flusher and write what is still queued."""
        if self._task is not None and self._stop is not None:
            self._stop.set()
            await self._task
            self._task = None
        await self.flush()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.flush_interval_s)
            await self.flush()

    async def flush(self) -> int:
        """Write everything queued now, in batches; return the rows written."""
        written = 0
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._batch))]
            try:
                await asyncio.to_thread(write_predictions, self.engine, batch, self._answers)
            except ModelplaneError as exc:
                # The store being down must not stop serving; the evidence is lost, counted.
                self.dropped += len(batch)
                log.warning("prediction log: %d records not written: %s", len(batch), exc)
                break
            written += len(batch)
        self.written += written
        self._since_trim += written
        if self._since_trim >= self._trim_every:
            self._since_trim = 0
            with contextlib.suppress(ModelplaneError):
                await asyncio.to_thread(trim_predictions, self.engine, self.config.retain_rows)
        return written + await self._flush_brief()

    async def _flush_brief(self) -> int:
        written = 0
        while self._brief:
            batch = [self._brief.popleft() for _ in range(min(len(self._brief), self._batch))]
            try:
                await asyncio.to_thread(write_requests, self.engine, batch, self._answers)
            except ModelplaneError as exc:
                self.dropped_brief += len(batch)
                log.warning("request log: %d records not written: %s", len(batch), exc)
                break
            written += len(batch)
        now = time.time()
        # Trimming by age costs an index range scan: once per tenth of the retention.
        every = self.config.request_retain_s / 10
        if self._requests_trimmed_at is None or now - self._requests_trimmed_at >= every:
            self._requests_trimmed_at = now
            cutoff = now - self.config.request_retain_s
            with contextlib.suppress(ModelplaneError):
                await asyncio.to_thread(trim_requests, self.engine, cutoff)
        # answers are kept for weeks: trimming them hourly keeps the scan small
        if self._answers_trimmed_at is None or now - self._answers_trimmed_at >= 3600.0:
            self._answers_trimmed_at = now
            with contextlib.suppress(ModelplaneError):
                await asyncio.to_thread(
                    trim_answers, self.engine, now - self.config.answer_retain_s
                )
        return written

    @property
    def _answers(self) -> bool:
        return self.config.keep_answers

    @property
    def _batch(self) -> int:
        return self.config.batch_size

    @property
    def _trim_every(self) -> int:
        # Trimming costs an index scan: do it once per tenth of the retained rows.
        return max(1, self.config.retain_rows // 10)


def _row(record: PredictionRecord) -> dict[str, Any]:
    latency = record.latency
    return {
        "request_id": record.request_id,
        "at": datetime.fromtimestamp(record.at, UTC),
        "endpoint": record.endpoint,
        "contract": record.contract,
        "contract_version": record.contract_version,
        "model_version": record.model_version,
        "digest": record.digest,
        "route": record.route,
        "route_kind": record.route_kind,
        "fallback_reason": record.fallback_reason,
        "status": record.status,
        "error_code": record.error_code,
        "detail": None if record.detail is None else record.detail[:2000],
        "queue_ms": latency.queue_ms,
        "batch_ms": latency.batch_ms,
        "compute_ms": latency.compute_ms,
        "total_ms": latency.total_ms,
        "batch_size": record.batch_size,
        "features": None if record.features is None else record.features.to_json(),
    }


def write_predictions(
    engine: Engine, records: Sequence[PredictionRecord], answers: bool = True
) -> None:
    """Insert ``records`` in one transaction (blocking: call it from a thread), and with
    ``answers`` what the model answered, for the outcome join."""
    if not records:
        return
    with write_session(engine) as session:
        session.execute(insert(PredictionRow), [_row(r) for r in records])
        if answers:
            insert_answers(session.connection(), records)


_REQUEST_COLUMNS = ("request_id", "at", "endpoint", "contract", "contract_version",
                    "model_version", "digest", "route", "route_kind", "status", "queue_ms",
                    "batch_ms", "compute_ms", "total_ms", "batch_size")  # fmt: skip


def _request_row(record: PredictionRecord) -> tuple[Any, ...]:
    latency = record.latency
    return (record.request_id, record.at, record.endpoint, record.contract,
            record.contract_version, record.model_version, record.digest, record.route,
            record.route_kind, record.status, latency.queue_ms, latency.batch_ms,
            latency.compute_ms, latency.total_ms, record.batch_size)  # fmt: skip


def write_requests(
    engine: Engine, records: Sequence[PredictionRecord], answers: bool = True
) -> None:
    """Insert brief ``records`` into the request log in one transaction (from a thread).

    Every request lands here, so rows go to the driver's ``executemany`` as plain tuples:
    building ORM parameters costs several times the insert itself."""
    if not records:
        return
    marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO request_log ({', '.join(_REQUEST_COLUMNS)})"
        f" VALUES ({', '.join([marker] * len(_REQUEST_COLUMNS))})"
    )
    with write_session(engine) as session:
        connection = session.connection()
        connection.exec_driver_sql(sql, [_request_row(r) for r in records])
        if answers:
            insert_answers(connection, records)


def trim_requests(engine: Engine, before: float) -> int:
    """Delete the request log's rows written before ``before`` (Unix seconds)."""
    with write_session(engine) as session:
        result = session.execute(delete(RequestRow).where(RequestRow.at < before))
        return int(getattr(result, "rowcount", 0) or 0)


def find_requests(engine: Engine, request_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """The request log's rows of ``request_id``, newest first, shaped as prediction log
    rows (``at`` a UTC datetime; no error, fallback, detail or features)."""
    query = (
        select(RequestRow.__table__)
        .where(RequestRow.request_id == request_id)
        .order_by(RequestRow.id.desc())
        .limit(limit)
    )
    with read_session(engine) as session:
        return [brief_row(dict(row._mapping)) for row in session.execute(query)]


def trim_predictions(engine: Engine, keep: int) -> int:
    """Delete all but the newest ``keep`` rows; return how many were deleted."""
    with write_session(engine) as session:
        cutoff = session.scalar(
            select(PredictionRow.id).order_by(PredictionRow.id.desc()).offset(keep).limit(1)
        )
        if cutoff is None:
            return 0
        result = session.execute(delete(PredictionRow).where(PredictionRow.id <= cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


def find_predictions(engine: Engine, request_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """The kept rows of ``request_id``, newest first (ids come from callers, so may repeat)."""
    query = (
        select(PredictionRow.__table__)
        .where(PredictionRow.request_id == request_id)
        .order_by(PredictionRow.id.desc())
        .limit(limit)
    )
    with read_session(engine) as session:
        return [dict(row._mapping) for row in session.execute(query)]

"""The SLO recorder: error budgets from the serving counters, kept in the state store.

Every ``interval_s`` (and once more when it stops) the recorder inside ``modelplane up``:

1. reads each served endpoint's SLO and cumulative counters through :class:`SloEvidence`
   (``system.gateway_views`` adapts the gateway): per route, requests answered by the
   model and requests that failed, and how many fell within the latency objective; per
   endpoint, requests shed with 429 before reaching a route. Availability's bad requests
   are route errors and shed requests; latency counts the requests a route timed;
2. turns them into the interval's counts: each counter set minus its last reading. A set
   the recorder has not seen, or one lower than last time (its route was rebuilt), counts
   from zero, since counters restart at zero;
3. appends the interval to ``slo_intervals`` (skipped when nothing was served). Now and
   then it merges intervals older than :data:`FINE_S` into hourly rows, so the long windows
   sum a few hundred rows per endpoint, and drops rows no window needs any more;
4. sums every window in one aggregate query (``SUM(CASE WHEN at > now - w ...)``, and
   ``MIN(at - span_s)``: how far back the data reaches, so an alert fires only once its
   windows hold enough, see :mod:`modelplane.core.slo`) and writes each endpoint's
   report (:func:`report_document`) as the status of an ``SLOReport`` resource named
   after it, which ``modelplane status`` reads with the endpoints. The budget so
   survives restarts: only the counters are in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, case, func, insert, select
from sqlalchemy.orm import Session

from modelplane.core.slo import (
    DAY_S,
    DEFAULT_ALERTS,
    HOUR_S,
    MIN_REQUESTS,
    BurnAlert,
    SLOReport,
    alert_windows,
    reports_from_totals,
)
from modelplane.errors import ModelplaneError
from modelplane.spec.contract import SLO
from modelplane.store.db import read_session, write_session
from modelplane.store.resources import put_status_row
from modelplane.store.schema import ResourceRow, SloIntervalRow
from modelplane.types import Clock, SystemClock

__all__ = [
    "BUCKET_S",
    "FINE_S",
    "KIND",
    "MAX_KEEP_S",
    "EndpointCounters",
    "SloEvidence",
    "SloRecorder",
    "Tally",
    "interval_tally",
    "report_document",
    "window_label",
]

log = logging.getLogger(__name__)

KIND = "SLOReport"
"""The resource kind of the reports, one per endpoint, named after it."""
FINE_S = 6 * HOUR_S
"""Intervals younger than this keep their own rows: the page alerts' windows are exact."""
BUCKET_S = HOUR_S
"""Older intervals are merged into rows of this span, ending on its multiples; a request
may so count in a long window up to this much longer than it happened."""
MAX_KEEP_S = 366 * DAY_S
"""Rows older than the longest window a contract may ask for go, served endpoint or not."""

_TABLE = SloIntervalRow.metadata.tables["slo_intervals"]
_COUNTS = ("avail_good", "avail_total", "latency_good", "latency_total")


@dataclass(frozen=True, slots=True)
class Tally:
    """Good and total requests for both objectives: cumulative from a counter set, or
    one interval's share."""

    avail_good: int = 0
    avail_total: int = 0
    latency_good: int = 0
    latency_total: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def __sub__(self, other: Tally) -> Tally:
        return Tally(*(a - b for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[int, int, int, int]:
        return (self.avail_good, self.avail_total, self.latency_good, self.latency_total)

    def below(self, other: Tally) -> bool:
        """Any counter is lower than in ``other``: the set restarted since."""
        return any(a < b for a, b in zip(self.values(), other.values(), strict=True))

    @property
    def empty(self) -> bool:
        return self.avail_total == 0 and self.latency_total == 0


@dataclass(frozen=True, slots=True)
class EndpointCounters:
    """A served endpoint's objectives and its cumulative counters."""

    slo: SLO
    tallies: Mapping[str, Tally]
    """By counter set: a key names one set of counters for as long as they only grow
    (a route's target, the endpoint's shed requests)."""


class SloEvidence(Protocol):
    """What the recorder reads from the data plane (``system.gateway_views`` adapts the gateway)."""

    def served(self) -> Mapping[str, EndpointCounters]:
        """Every endpoint served now, by name, its counters read at once."""
        ...


def interval_tally(last: Mapping[str, Tally], current: Mapping[str, Tally]) -> Tally:
    """What ``current`` counted since ``last``; a counter set that is new or lower than
    last time restarted at zero, so all it holds is new."""
    total = Tally()
    for key, now in current.items():
        before = last.get(key)
        total += now if before is None or now.below(before) else now - before
    return total


def window_label(window_s: float) -> str:
    """``300`` -> ``5m``, ``3600`` -> ``1h``, ``259200`` -> ``3d``."""
    for unit, seconds in (("d", DAY_S), ("h", HOUR_S), ("m", 60.0)):
        if window_s >= seconds and window_s % seconds == 0:
            return f"{window_s / seconds:g}{unit}"
    return f"{window_s:g}s"


def report_document(
    reports: Mapping[str, SLOReport],
    slo: SLO,
    now: float,
    *,
    data_span_s: float | None = None,
    min_requests: int = MIN_REQUESTS,
) -> dict[str, Any]:
    """The JSON ``status`` shows: per objective its budget left over the SLO window, burn
    rates by window, the alerts firing and those without enough data to judge yet."""
    return {
        "at": now,
        "window_days": slo.window_days,
        "data_span_s": None if data_span_s is None else round(data_span_s, 3),
        "min_requests": min_requests,
        "availability": _objective(reports["availability"]),
        "latency": {**_objective(reports["latency"]), "threshold_ms": slo.latency_ms},
    }


def _objective(report: SLOReport) -> dict[str, Any]:
    spent = report.budget
    # Rounded: the numbers are read by people, and a stable text keeps rows comparable.
    return {
        "objective": spent.objective,
        "good": spent.good,
        "total": spent.total,
        "remaining": round(spent.remaining, 6),
        "burn_rates": {window_label(w): round(rate, 4) for w, rate in report.burn_rates},
        "alerts": [state.alert.name for state in report.alerts],
        "firing": [alert.name for alert in report.firing],
        "not_judged": [alert.name for alert in report.not_judged],
        "severity": None if report.severity is None else report.severity.value,
    }


class SloRecorder:
    """Records served endpoints' SLO intervals and reports; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        evidence: SloEvidence,
        *,
        clock: Clock | None = None,
        interval_s: float = 10.0,
        compact_every_s: float = 600.0,
        alerts: Sequence[BurnAlert] = DEFAULT_ALERTS,
        min_requests: int = MIN_REQUESTS,
    ) -> None:
        self.engine = engine
        self.min_requests = min_requests
        self.evidence = evidence
        self.interval_s = interval_s
        self.compact_every_s = compact_every_s
        self.alerts = tuple(alerts)
        self._clock = clock or SystemClock()
        self._last: dict[str, Mapping[str, Tally]] = {}
        self._compacted_at: float | None = None
        self._recorded_at: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Record now, every ``interval_s``, and once more after ``stop`` is set, so the
        last interval's counts are kept; errors are logged, not fatal."""
        while not stop.is_set():
            await self._record_logged()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
        await self._record_logged()

    async def _record_logged(self) -> None:
        try:
            await self.record()
        except ModelplaneError as exc:
            log.warning("SLO recording failed: %s", exc)

    async def record(self) -> dict[str, dict[str, Any]]:
        """One pass; the reports written, by endpoint. Counters are read on the event loop
        (the data plane's thread), the store is written from a worker thread."""
        served = dict(self.evidence.served())
        intervals = {
            name: interval_tally(self._last.get(name, {}), counters.tallies)
            for name, counters in served.items()
        }
        now, ticked = self._clock.wall(), self._clock.monotonic()
        compact = self._compacted_at is None or ticked - self._compacted_at >= self.compact_every_s
        span = self.interval_s if self._recorded_at is None else ticked - self._recorded_at
        await asyncio.to_thread(self._store, served, intervals, now, span, compact=compact)
        # Only once stored: a failed write leaves the counts to the next interval.
        self._last = {name: counters.tallies for name, counters in served.items()}
        self._recorded_at = ticked
        if compact:
            self._compacted_at = ticked
        slos = {name: counters.slo for name, counters in served.items()}
        return await asyncio.to_thread(self._report, slos, now)

    # ---------------------------------------------------------------- store (worker thread)

    def _store(
        self,
        served: Mapping[str, EndpointCounters],
        intervals: Mapping[str, Tally],
        now: float,
        span_s: float,
        *,
        compact: bool,
    ) -> None:
        rows = [
            {"endpoint": name, "at": now, "span_s": span_s, **_columns(tally)}
            for name, tally in intervals.items()
            if not tally.empty
        ]
        if not rows and not compact:
            return
        with write_session(self.engine) as session:
            if rows:
                session.execute(insert(SloIntervalRow), rows)
            if compact:
                _compact(session, now)
                _prune(session, now, {n: self._keep_s(c.slo) for n, c in served.items()})

    def _keep_s(self, slo: SLO) -> float:
        return max(slo.window_days * DAY_S, *alert_windows(self.alerts))

    def _report(self, slos: Mapping[str, SLO], now: float) -> dict[str, dict[str, Any]]:
        if not slos:
            return {}
        windows = sorted(
            {*alert_windows(self.alerts), *(s.window_days * DAY_S for s in slos.values())}
        )
        with read_session(self.engine) as session:
            sums = _window_sums(session, list(slos), windows, now)
        documents: dict[str, dict[str, Any]] = {}
        for name, slo in slos.items():
            found, since = sums.get(name, ({}, None))
            empty = Tally()
            availability = {w: _pair(found.get(w, empty), 0) for w in windows}
            latency = {w: _pair(found.get(w, empty), 2) for w in windows}
            span = 0.0 if since is None else now - since
            least = self.min_requests
            reports = reports_from_totals(
                availability, latency, slo, self.alerts, data_span_s=span, min_requests=least
            )
            documents[name] = report_document(
                reports, slo, now, data_span_s=span, min_requests=least
            )
        self._write_reports(documents, now)
        return documents

    def _write_reports(self, documents: Mapping[str, dict[str, Any]], now: float) -> None:
        at = datetime.fromtimestamp(now, UTC)
        query = select(ResourceRow).where(
            ResourceRow.kind == KIND, ResourceRow.name.in_(list(documents))
        )
        with write_session(self.engine) as session:
            rows = {row.name: row for row in session.scalars(query)}
            for name, document in documents.items():
                row = rows.get(name)
                put_status_row(
                    session,
                    row,
                    kind=KIND,
                    name=name,
                    spec={"endpoint": name},
                    status=document,
                    at=at,
                )


def _columns(tally: Tally) -> dict[str, int]:
    return dict(zip(_COUNTS, tally.values(), strict=True))


def _pair(tally: Tally, offset: int) -> tuple[int, int]:
    values = tally.values()
    return values[offset], values[offset + 1]


def _window_sums(
    session: Session, endpoints: Sequence[str], windows: Sequence[float], now: float
) -> dict[str, tuple[dict[float, Tally], float | None]]:
    """Each endpoint's counts over each window, and when its earliest interval inside the
    longest window began, in one aggregate query."""
    columns = [
        func.coalesce(func.sum(case((_TABLE.c.at > now - w, _TABLE.c[name]), else_=0)), 0)
        for w in windows
        for name in _COUNTS
    ]
    since = func.min(_TABLE.c.at - _TABLE.c.span_s)
    query = (
        select(_TABLE.c.endpoint, since, *columns)
        .where(
            _TABLE.c.endpoint.in_(list(endpoints)),
            _TABLE.c.at > now - max(windows),
            _TABLE.c.at <= now,
        )
        .group_by(_TABLE.c.endpoint)
    )
    sums: dict[str, tuple[dict[float, Tally], float | None]] = {}
    width = len(_COUNTS)
    for endpoint, began, *values in session.execute(query):
        counts = [int(v) for v in values]
        tallies = {w: Tally(*counts[i * width : (i + 1) * width]) for i, w in enumerate(windows)}
        sums[endpoint] = (tallies, None if began is None else float(began))
    return sums


def _compact(session: Session, now: float) -> None:
    """Merge intervals older than :data:`FINE_S` into rows of :data:`BUCKET_S` each."""
    cutoff = math.floor((now - FINE_S) / BUCKET_S) * BUCKET_S
    old = (_TABLE.c.span_s < BUCKET_S, _TABLE.c.at <= cutoff)
    merged: defaultdict[tuple[str, float], Tally] = defaultdict(Tally)
    query = select(_TABLE.c.endpoint, _TABLE.c.at, *(_TABLE.c[name] for name in _COUNTS))
    for endpoint, at, *counts in session.execute(query.where(*old)):
        # A bucket holds (end - BUCKET_S, end], as a window holds (now - w, now].
        end = math.ceil(at / BUCKET_S) * BUCKET_S
        merged[endpoint, float(end)] += Tally(*(int(c) for c in counts))
    if not merged:
        return
    session.execute(_TABLE.delete().where(*old))
    session.execute(
        insert(SloIntervalRow),
        [
            {"endpoint": endpoint, "at": end, "span_s": BUCKET_S, **_columns(tally)}
            for (endpoint, end), tally in merged.items()
        ],
    )


def _prune(session: Session, now: float, keep_s: Mapping[str, float]) -> None:
    """Drop rows no window of their endpoint reaches; an endpoint not served now keeps
    its rows up to :data:`MAX_KEEP_S` (it may just not be loaded yet)."""
    # Core statements, not ORM ones: no loaded object needs synchronizing.
    for endpoint, keep in keep_s.items():
        session.execute(
            _TABLE.delete().where(_TABLE.c.endpoint == endpoint, _TABLE.c.at <= now - keep)
        )
    session.execute(_TABLE.delete().where(_TABLE.c.at <= now - MAX_KEEP_S))
    resources = ResourceRow.metadata.tables["resources"]
    endpoints = select(resources.c.name).where(resources.c.kind == "Endpoint")
    session.execute(
        resources.delete().where(resources.c.kind == KIND, resources.c.name.not_in(endpoints))
    )

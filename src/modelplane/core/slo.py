"""SLOs: error budgets and multiwindow, multi-burn-rate alerts (Google SRE workbook, ch. 5).

An objective of 99.9 % leaves an error budget of 0.1 % of requests over the SLO window.
The *burn rate* over a window is the window's error rate over the budget: 1 spends the
budget exactly in the SLO window, 14.4 spends 2 % of a 30-day budget in one hour. An alert
fires only when a long window *and* its short window both burn faster than its factor: the
long window proves the burn is significant, the short one that it is still going on.

Series are counts per interval ``(at, good, total)``, ``at`` the interval's end; a window of
``w`` seconds at ``now`` holds the intervals with ``now - w < at <= now``. Latency objectives
count a request as good when it falls in a histogram bucket whose upper bound is at most the
SLO's ``latency_ms`` (give the histogram a bound there, or the count is conservative).

An alert judges only once its windows hold enough to judge: at least ``min_requests`` in the
long window, and data reaching back at least the short window. Minutes after a start, one
slow request among ten would otherwise read as a budget burning a hundred times too fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from modelplane.core.drift import Histogram
from modelplane.spec.contract import SLO

__all__ = [
    "DAY_S",
    "DEFAULT_ALERTS",
    "HOUR_S",
    "MIN_REQUESTS",
    "Budget",
    "BurnAlert",
    "Counts",
    "FiringState",
    "SLOReport",
    "Severity",
    "Totals",
    "alert_windows",
    "budget",
    "latency_counts",
    "report_from_totals",
    "reports_from_totals",
    "slo_report",
    "slo_reports",
]

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S
MIN_REQUESTS = 100
"""Requests an alert's long window must hold before the alert may fire."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Good and total requests over the interval ending at ``at``."""

    at: float
    good: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.good <= self.total:
            raise ValueError("counts need 0 <= good <= total")


class Severity(StrEnum):
    PAGE = "page"
    """Wake someone: the budget is going fast."""
    TICKET = "ticket"
    """Look during working hours: the budget will run out before the window ends."""


@dataclass(frozen=True, slots=True)
class BurnAlert:
    """Fire when both windows burn faster than ``factor``."""

    severity: Severity
    long_s: float
    short_s: float
    factor: float

    @property
    def name(self) -> str:
        return f"{self.severity.value}-{self.long_s / HOUR_S:g}h"


DEFAULT_ALERTS: tuple[BurnAlert, ...] = (
    BurnAlert(Severity.PAGE, 1 * HOUR_S, 5 * 60.0, 14.4),
    BurnAlert(Severity.PAGE, 6 * HOUR_S, 30 * 60.0, 6.0),
    BurnAlert(Severity.TICKET, 3 * DAY_S, 6 * HOUR_S, 1.0),
)
"""The SRE workbook's recommendation: 2 % of the budget in 1 h or 5 % in 6 h pages; 10 %
in 3 days opens a ticket."""


@dataclass(frozen=True, slots=True)
class Budget:
    """An objective's standing over one window."""

    objective: float
    good: int
    total: int

    @property
    def error_rate(self) -> float:
        return (self.total - self.good) / self.total if self.total else 0.0

    @property
    def burn_rate(self) -> float:
        """Error rate over the budget; no traffic burns nothing."""
        return self.error_rate / (1.0 - self.objective)

    @property
    def remaining(self) -> float:
        """Share of the budget left: 1 untouched, 0 spent, negative overspent."""
        return 1.0 - self.burn_rate


@dataclass(frozen=True, slots=True)
class FiringState:
    """An alert's standing: its windows' burn rates, and whether they hold enough to judge."""

    alert: BurnAlert
    long_burn: float
    short_burn: float
    long_requests: int = MIN_REQUESTS
    """Requests in the long window."""
    data_span_s: float = math.inf
    """How far back the recorded data reaches from ``now``."""
    min_requests: int = MIN_REQUESTS

    @property
    def judged(self) -> bool:
        """Enough data: ``min_requests`` in the long window, spanning the short window."""
        return self.long_requests >= self.min_requests and self.data_span_s >= self.alert.short_s

    @property
    def firing(self) -> bool:
        burning = self.long_burn > self.alert.factor and self.short_burn > self.alert.factor
        return burning and self.judged


@dataclass(frozen=True, slots=True)
class SLOReport:
    """An objective over its SLO window, and the burn alerts' standing at ``now``."""

    budget: Budget
    window_s: float
    burn_rates: tuple[tuple[float, float], ...]
    """``(window_s, burn rate)`` for every window an alert looks at, shortest first."""
    alerts: tuple[FiringState, ...]

    @property
    def firing(self) -> tuple[BurnAlert, ...]:
        return tuple(a.alert for a in self.alerts if a.firing)

    @property
    def not_judged(self) -> tuple[BurnAlert, ...]:
        """Alerts whose windows do not hold enough data yet to fire."""
        return tuple(a.alert for a in self.alerts if not a.judged)

    @property
    def severity(self) -> Severity | None:
        """The most urgent firing alert's severity, if any fires."""
        severities = {a.severity for a in self.firing}
        if Severity.PAGE in severities:
            return Severity.PAGE
        return Severity.TICKET if severities else None


def latency_counts(at: float, histogram: Histogram, threshold_ms: float) -> Counts:
    """A latency histogram's interval as good (within ``threshold_ms``) and total counts."""
    return Counts(at, histogram.count_at_most(threshold_ms), histogram.total)


def budget(series: Sequence[Counts], objective: float, now: float, window_s: float) -> Budget:
    """The objective's standing over the ``window_s`` seconds up to ``now``."""
    if not 0.0 < objective < 1.0:
        raise ValueError("an objective is a share in (0, 1)")
    inside = [c for c in series if now - window_s < c.at <= now]
    return Budget(objective, sum(c.good for c in inside), sum(c.total for c in inside))


Totals = Mapping[float, tuple[int, int]]
"""``(good, total)`` summed per window, by the window's length in seconds."""


def alert_windows(alerts: Sequence[BurnAlert] = DEFAULT_ALERTS) -> tuple[float, ...]:
    """Every window the alerts look at, shortest first."""
    return tuple(sorted({w for a in alerts for w in (a.long_s, a.short_s)}))


def report_from_totals(
    totals: Totals,
    objective: float,
    window_s: float,
    alerts: Sequence[BurnAlert] = DEFAULT_ALERTS,
    *,
    data_span_s: float = math.inf,
    min_requests: int = MIN_REQUESTS,
) -> SLOReport:
    """:func:`slo_report` from counts already summed per window (what one database
    aggregate returns); ``totals`` holds ``window_s`` and every window of ``alerts``;
    ``data_span_s`` is how far back the data reaches (from its earliest interval's start)."""
    if not 0.0 < objective < 1.0:
        raise ValueError("an objective is a share in (0, 1)")
    rates = {w: Budget(objective, *totals[w]).burn_rate for w in alert_windows(alerts)}
    states = tuple(
        FiringState(
            a, rates[a.long_s], rates[a.short_s], totals[a.long_s][1], data_span_s, min_requests
        )
        for a in alerts
    )
    return SLOReport(
        budget=Budget(objective, *totals[window_s]),
        window_s=window_s,
        burn_rates=tuple(rates.items()),
        alerts=states,
    )


def slo_report(
    series: Sequence[Counts],
    objective: float,
    now: float,
    window_s: float,
    alerts: Sequence[BurnAlert] = DEFAULT_ALERTS,
    *,
    min_requests: int = MIN_REQUESTS,
) -> SLOReport:
    """Budget left over the SLO window, burn rates, and which alerts fire. Counts carry
    only their interval's end, so the data is taken to reach back to the earliest end."""
    totals: dict[float, tuple[int, int]] = {}
    for w in {window_s, *alert_windows(alerts)}:
        inside = budget(series, objective, now, w)
        totals[w] = (inside.good, inside.total)
    ends = [c.at for c in series if c.at <= now]
    span = now - min(ends) if ends else 0.0
    return report_from_totals(
        totals, objective, window_s, alerts, data_span_s=span, min_requests=min_requests
    )


def slo_reports(
    availability: Sequence[Counts],
    latency: Sequence[Counts],
    slo: SLO,
    now: float,
    alerts: Sequence[BurnAlert] = DEFAULT_ALERTS,
) -> dict[str, SLOReport]:
    """A contract's two objectives: ``availability``, and ``latency`` (share of requests
    within ``latency_ms``, against ``latency_quantile``)."""
    window_s = slo.window_days * DAY_S
    return {
        "availability": slo_report(availability, slo.availability, now, window_s, alerts),
        "latency": slo_report(latency, slo.latency_quantile, now, window_s, alerts),
    }


def reports_from_totals(
    availability: Totals,
    latency: Totals,
    slo: SLO,
    alerts: Sequence[BurnAlert] = DEFAULT_ALERTS,
    *,
    data_span_s: float = math.inf,
    min_requests: int = MIN_REQUESTS,
) -> dict[str, SLOReport]:
    """:func:`slo_reports` from counts summed per window (see :func:`report_from_totals`);
    both hold ``slo.window_days`` in seconds and every window of ``alerts``."""
    window_s = slo.window_days * DAY_S
    return {
        objective: report_from_totals(
            totals, share, window_s, alerts, data_span_s=data_span_s, min_requests=min_requests
        )
        for objective, totals, share in (
            ("availability", availability, slo.availability),
            ("latency", latency, slo.latency_quantile),
        )
    }

"""SLO error budgets and multiwindow, multi-burn-rate alerts, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.core.drift import Histogram
from modelplane.core.slo import (
    DAY_S,
    DEFAULT_ALERTS,
    HOUR_S,
    MIN_REQUESTS,
    BurnAlert,
    Counts,
    Severity,
    alert_windows,
    budget,
    latency_counts,
    report_from_totals,
    reports_from_totals,
    slo_report,
    slo_reports,
)
from modelplane.spec.contract import SLO

NOW = 100 * DAY_S
OBJECTIVE = 0.999  # a budget of 0.1 % of requests


def series(last_5m_good: int = 9_800) -> list[Counts]:
    """Counts per interval, newest first; each comment is the interval's error rate."""
    return [
        Counts(NOW, last_5m_good, 10_000),  # 2 % (or what the test asks)
        Counts(NOW - 1800, 89_900, 90_000),  # 0.11 %
        Counts(NOW - 5 * HOUR_S, 999_500, 1_000_000),  # 0.05 %
        Counts(NOW - 2 * DAY_S, 9_998_000, 10_000_000),  # 0.02 %
        Counts(NOW - 20 * DAY_S, 9_995_000, 10_000_000),  # 0.05 %
        Counts(NOW - 40 * DAY_S, 0, 1_000),  # outside the 28-day window
        Counts(NOW + 60, 0, 1_000),  # after now: not counted yet
    ]


def test_burn_rates_per_window_by_hand() -> None:
    report = slo_report(series(), OBJECTIVE, NOW, 28 * DAY_S)
    rates = dict(report.burn_rates)
    assert list(rates) == [300.0, 1800.0, HOUR_S, 6 * HOUR_S, 3 * DAY_S]
    assert rates[300.0] == pytest.approx(20.0)  # 200 / 10 000 / 0.001
    assert rates[1800.0] == pytest.approx(20.0)  # the 30-min-old interval is not inside
    assert rates[HOUR_S] == pytest.approx(3.0)  # 300 / 100 000 / 0.001
    assert rates[6 * HOUR_S] == pytest.approx(800 / 1_100_000 / 0.001)
    assert rates[3 * DAY_S] == pytest.approx(2_800 / 11_100_000 / 0.001)
    assert report.firing == ()
    assert report.severity is None


def test_budget_remaining_over_the_slo_window() -> None:
    report = slo_report(series(), OBJECTIVE, NOW, 28 * DAY_S)
    assert (report.budget.good, report.budget.total) == (21_092_200, 21_100_000)
    assert report.budget.remaining == pytest.approx(1 - 7_800 / 21_100_000 / 0.001)
    assert report.budget.remaining == pytest.approx(0.6303, abs=1e-4)


def test_a_fast_burn_pages_on_the_one_hour_pair() -> None:
    report = slo_report(series(last_5m_good=8_000), OBJECTIVE, NOW, 28 * DAY_S)
    long_burn = 2_100 / 100_000 / 0.001  # 21x over the hour
    states = {s.alert.name: s for s in report.alerts}
    assert states["page-1h"].long_burn == pytest.approx(long_burn)
    assert states["page-1h"].short_burn == pytest.approx(200.0)
    assert states["page-1h"].firing
    assert not states["page-6h"].firing  # 2 600 / 1 100 000 / 0.001 = 2.4x < 6x
    assert [a.name for a in report.firing] == ["page-1h"]
    assert report.severity is Severity.PAGE


def test_a_slow_steady_burn_opens_a_ticket() -> None:
    steady = [Counts(NOW - h * HOUR_S, 99_850, 100_000) for h in range(96)]  # 1.5x everywhere
    report = slo_report(steady, OBJECTIVE, NOW, 28 * DAY_S)
    assert all(rate == pytest.approx(1.5) for _, rate in report.burn_rates)
    assert [a.name for a in report.firing] == ["ticket-72h"]
    assert report.severity is Severity.TICKET


def test_a_recovered_spike_does_not_page() -> None:
    # an hour burning at 20x ended 10 minutes ago: the long window still burns, the short not
    spike = [Counts(NOW - 600 - m * 60, 98_000, 100_000) for m in range(50)]
    calm = [Counts(NOW - m * 60, 100_000, 100_000) for m in range(10)]
    alert = BurnAlert(Severity.PAGE, HOUR_S, 300.0, 14.4)
    report = slo_report(spike + calm, OBJECTIVE, NOW, 28 * DAY_S, alerts=(alert,))
    state = report.alerts[0]
    assert state.long_burn == pytest.approx(50 * 2_000 / 6_000_000 / 0.001)
    assert state.short_burn == 0.0
    assert not state.firing


def test_no_traffic_burns_nothing() -> None:
    b = budget([], OBJECTIVE, NOW, DAY_S)
    assert (b.error_rate, b.burn_rate, b.remaining) == (0.0, 0.0, 1.0)


def test_latency_objective_counts_requests_within_the_threshold() -> None:
    h = Histogram((50.0, 100.0, 200.0, math.inf), (900, 90, 9, 1))
    assert latency_counts(NOW, h, 100.0) == Counts(NOW, 990, 1_000)
    # 150 ms falls inside a bucket: only buckets wholly within count, conservatively
    assert latency_counts(NOW, h, 150.0) == Counts(NOW, 990, 1_000)


def test_a_contracts_two_objectives() -> None:
    slo = SLO(availability=0.999, latency_ms=100.0, latency_quantile=0.99, window_days=28)
    h = Histogram((50.0, 100.0, math.inf), (9_500, 300, 200))  # 2 % slower than 100 ms
    reports = slo_reports(series(), [latency_counts(NOW, h, slo.latency_ms)], slo, NOW)
    latency = reports["latency"]
    assert latency.budget.remaining == pytest.approx(1 - 0.02 / 0.01)  # overspent: -1.0
    assert dict(latency.burn_rates)[300.0] == pytest.approx(2.0)
    assert reports["availability"].window_s == 28 * DAY_S


def test_default_alerts_follow_the_workbook() -> None:
    assert [(a.name, a.long_s, a.short_s, a.factor) for a in DEFAULT_ALERTS] == [
        ("page-1h", HOUR_S, 300.0, 14.4),
        ("page-6h", 6 * HOUR_S, 1800.0, 6.0),
        ("ticket-72h", 3 * DAY_S, 6 * HOUR_S, 1.0),
    ]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="good <= total"):
        Counts(NOW, 5, 4)
    with pytest.raises(ValueError, match="objective"):
        budget([], 1.0, NOW, DAY_S)


def _totals(series: list[Counts], windows: set[float]) -> dict[float, tuple[int, int]]:
    """What a database's per-window SUM returns for ``series``."""
    return {
        w: (sum(c.good for c in series if NOW - w < c.at <= NOW),
            sum(c.total for c in series if NOW - w < c.at <= NOW))
        for w in windows
    }  # fmt: skip


_intervals = st.lists(
    st.tuples(st.floats(0, 40 * DAY_S), st.integers(0, 10_000), st.integers(0, 10_000)),
    max_size=30,
).map(lambda xs: [Counts(NOW - age, min(a, b), max(a, b)) for age, a, b in xs])


@given(_intervals)
def test_a_report_from_summed_windows_is_the_report_from_the_series(
    series: list[Counts],
) -> None:
    window_s = 28 * DAY_S
    totals = _totals(series, {window_s, *alert_windows()})
    ends = [c.at for c in series if c.at <= NOW]
    span = NOW - min(ends) if ends else 0.0
    assert report_from_totals(totals, OBJECTIVE, window_s, data_span_s=span) == slo_report(
        series, OBJECTIVE, NOW, window_s
    )


def test_both_objectives_from_summed_windows() -> None:
    slo = SLO(availability=0.999, latency_quantile=0.99, window_days=28)
    totals = _totals(series(), {28 * DAY_S, *alert_windows()})
    # the series reaches 40 days back, as slo_report sees it
    reports = reports_from_totals(totals, totals, slo, data_span_s=40 * DAY_S)
    assert reports["availability"] == slo_report(series(), 0.999, NOW, 28 * DAY_S)
    assert reports["latency"] == slo_report(series(), 0.99, NOW, 28 * DAY_S)
    assert alert_windows() == (300.0, 1800.0, HOUR_S, 6 * HOUR_S, 3 * DAY_S)
    with pytest.raises(ValueError, match="objective"):
        report_from_totals(totals, 0.0, 28 * DAY_S)


# Ten minutes after a start: a burn rate far above every factor, judged or not by the data.
_PAGE = BurnAlert(Severity.PAGE, HOUR_S, 300.0, 14.4)
_TICKET = BurnAlert(Severity.TICKET, 3 * DAY_S, 6 * HOUR_S, 1.0)


@pytest.mark.parametrize(
    ("alert", "requests", "span_s", "min_requests", "fires"),
    [
        (_PAGE, 99, 600.0, MIN_REQUESTS, False),  # too few requests in the long window
        (_PAGE, 100, 600.0, MIN_REQUESTS, True),  # enough, spanning the short window
        (_PAGE, 100, 299.0, MIN_REQUESTS, False),  # the data does not reach 5 minutes back
        (_TICKET, 10_000, 600.0, MIN_REQUESTS, False),  # nor 6 hours back: no ticket yet
        (_TICKET, 10_000, 6 * HOUR_S, MIN_REQUESTS, True),
        (_PAGE, 20, 600.0, 10, True),  # the minimum is configurable
    ],
)
def test_an_alert_fires_only_once_its_windows_hold_enough(
    alert: BurnAlert, requests: int, span_s: float, min_requests: int, fires: bool
) -> None:
    bad = requests // 2  # 50 % errors: a burn rate of 500 against a 0.1 % budget
    inside = (requests - bad, requests)
    totals = dict.fromkeys({28 * DAY_S, alert.long_s, alert.short_s}, inside)
    report = report_from_totals(totals, OBJECTIVE, 28 * DAY_S, (alert,), data_span_s=span_s,
                                min_requests=min_requests)  # fmt: skip
    state = report.alerts[0]
    assert state.long_burn > alert.factor
    assert state.short_burn > alert.factor
    assert state.firing is fires
    assert report.not_judged == (() if fires else (alert,))


def test_a_series_minutes_old_fires_no_ticket() -> None:
    # what status showed minutes after start: "latency ... FIRING ticket-72h"
    young = [Counts(NOW - m * 60, 50, 100) for m in range(10)]
    report = slo_report(young, OBJECTIVE, NOW, 28 * DAY_S)
    assert [a.name for a in report.firing] == ["page-1h"]  # 5 min of data, 1 000 requests
    assert [a.name for a in report.not_judged] == ["page-6h", "ticket-72h"]

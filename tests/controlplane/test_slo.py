"""The SLO recorder: interval deltas from cumulative counters, persistence in the state store
(SQLite and PostgreSQL), reports that survive a restart, hourly compaction and pruning."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from modelplane.controlplane.slo import (
    BUCKET_S,
    KIND,
    EndpointCounters,
    SloRecorder,
    Tally,
    interval_tally,
    window_label,
)
from modelplane.core.slo import DAY_S, HOUR_S
from modelplane.spec.contract import SLO
from modelplane.store.db import open_engine, read_session
from modelplane.store.resources import ResourceStore
from modelplane.store.schema import SloIntervalRow
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(60)

START = 1_700_000_000.0
ENDPOINT = "fraud-score"


class FakeServing:
    """Cumulative counters per endpoint and counter set, moved by the test as traffic."""

    def __init__(self, slo: SLO | None = None) -> None:
        self.slo = slo or SLO(availability=0.99, latency_ms=100.0, latency_quantile=0.9)
        self.counters: dict[str, dict[str, Tally]] = {}

    def served(self) -> dict[str, EndpointCounters]:
        return {name: EndpointCounters(self.slo, dict(t)) for name, t in self.counters.items()}

    def serve(
        self,
        ok: int = 0,
        failed: int = 0,
        slow: int = 0,
        *,
        key: str = "route",
        name: str = ENDPOINT,
    ) -> None:
        """``ok`` fast answers, ``slow`` of them over the latency objective, ``failed``
        errors (timed, within the objective)."""
        tallies = self.counters.setdefault(name, {})
        grown = Tally(ok, ok + failed, ok + failed - slow, ok + failed)
        tallies[key] = tallies.get(key, Tally()) + grown

    def restart(self, name: str = ENDPOINT) -> None:
        """Every counter of ``name`` back at zero, as when ``modelplane up`` restarts."""
        self.counters[name] = {}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def record(recorder: SloRecorder) -> dict[str, dict[str, Any]]:
    return asyncio.run(recorder.record())


def intervals(engine: Engine) -> list[tuple[str, float, float, int, int, int, int]]:
    query = select(
        SloIntervalRow.endpoint, SloIntervalRow.at, SloIntervalRow.span_s,
        SloIntervalRow.avail_good, SloIntervalRow.avail_total,
        SloIntervalRow.latency_good, SloIntervalRow.latency_total,
    ).order_by(SloIntervalRow.at)  # fmt: skip
    with read_session(engine) as session:
        return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("last", "current", "expected"),
    [
        ({}, {"r": Tally(5, 6, 4, 6)}, Tally(5, 6, 4, 6)),  # first reading: all of it is new
        ({"r": Tally(5, 6, 4, 6)}, {"r": Tally(9, 12, 9, 12)}, Tally(4, 6, 5, 6)),
        ({"r": Tally(5, 6, 4, 6)}, {"r": Tally(5, 6, 4, 6)}, Tally()),  # nothing served
        ({"r": Tally(50, 60, 40, 60)}, {"r": Tally(3, 4, 4, 4)}, Tally(3, 4, 4, 4)),  # restarted
        ({"r": Tally(5, 6, 6, 6)}, {"r": Tally(9, 10, 5, 10)}, Tally(9, 10, 5, 10)),  # one lower
        ({"old": Tally(7, 7, 7, 7)}, {"new": Tally(1, 2, 2, 2)}, Tally(1, 2, 2, 2)),  # rebuilt
        (
            {"a": Tally(1, 1, 1, 1), "shed": Tally(0, 3)},
            {"a": Tally(2, 2, 2, 2), "b": Tally(1, 1, 1, 1), "shed": Tally(0, 5)},
            Tally(2, 4, 2, 2),
        ),
    ],
)
def test_interval_is_the_growth_since_last_time(
    last: dict[str, Tally], current: dict[str, Tally], expected: Tally
) -> None:
    assert interval_tally(last, current) == expected


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(300.0, "5m"), (1800.0, "30m"), (HOUR_S, "1h"), (6 * HOUR_S, "6h"), (3 * DAY_S, "3d"),
     (28 * DAY_S, "28d"), (90.0, "90s"), (5400.0, "90m")],
)  # fmt: skip
def test_window_labels(seconds: float, label: str) -> None:
    assert window_label(seconds) == label


def test_intervals_are_deltas_and_the_report_sums_them(engine: Engine) -> None:
    clock, serving = FakeClock(START), FakeServing()
    recorder = SloRecorder(engine, serving, clock=clock, interval_s=10.0)
    assert record(recorder) == {}  # nothing served yet
    serving.serve(ok=95, failed=5, slow=10)
    clock.advance(10)
    first = record(recorder)[ENDPOINT]
    clock.advance(10)
    assert record(recorder)[ENDPOINT]["availability"]["total"] == 100  # an idle interval
    serving.serve(ok=100)
    clock.advance(10)
    report = record(recorder)[ENDPOINT]
    assert [row[3:] for row in intervals(engine)] == [(95, 100, 90, 100), (100, 100, 100, 100)]
    assert first["availability"]["good"] == 95

    availability, latency = report["availability"], report["latency"]
    assert (availability["good"], availability["total"]) == (195, 200)
    assert availability["objective"] == 0.99
    assert availability["remaining"] == pytest.approx(1 - (5 / 200) / 0.01)
    assert availability["burn_rates"]["5m"] == pytest.approx(2.5)
    assert list(availability["burn_rates"]) == ["5m", "30m", "1h", "6h", "3d"]
    assert (latency["good"], latency["total"], latency["threshold_ms"]) == (190, 200, 100.0)
    assert latency["remaining"] == pytest.approx(1 - (10 / 200) / 0.1)
    assert (report["at"], report["window_days"]) == (clock.wall(), 28)
    stored = ResourceStore(engine).get(KIND, ENDPOINT)
    assert stored.status == report


def test_a_fast_burn_fires_each_alert_once_its_windows_hold_enough(engine: Engine) -> None:
    clock, serving = FakeClock(START), FakeServing()
    recorder = SloRecorder(engine, serving, clock=clock)
    serving.serve(ok=800, failed=200)  # 20 % errors against a 1 % budget: 20x
    clock.advance(10)
    first = record(recorder)[ENDPOINT]
    # ten seconds of data: burning fast, but no window is judged on that
    assert first["availability"]["firing"] == []
    assert first["availability"]["not_judged"] == ["page-1h", "page-6h", "ticket-72h"]
    assert (first["data_span_s"], first["min_requests"]) == (10.0, 100)
    seen: dict[tuple[str, ...], float] = {}
    for _ in range(6 * 6):  # six hours of 10-minute intervals
        serving.serve(ok=800, failed=200)
        clock.advance(600)
        availability = record(recorder)[ENDPOINT]["availability"]
        seen.setdefault(tuple(availability["firing"]), clock.wall() - START)
    assert list(seen) == [("page-1h",), ("page-1h", "page-6h"),
                          ("page-1h", "page-6h", "ticket-72h")]  # fmt: skip
    assert seen[("page-1h", "page-6h")] >= 1800  # the short window of the 6-hour pair
    assert seen[("page-1h", "page-6h", "ticket-72h")] >= 6 * HOUR_S
    assert availability["severity"] == "page"
    assert availability["remaining"] < 0


def test_too_few_requests_fire_nothing(engine: Engine) -> None:
    clock, serving = FakeClock(START), FakeServing()
    recorder = SloRecorder(engine, serving, clock=clock, min_requests=50)
    for _ in range(6):  # an hour with a request or two every 10 minutes, half failing
        serving.serve(ok=4, failed=4)
        clock.advance(600)
        report = record(recorder)[ENDPOINT]["availability"]
    assert report["burn_rates"]["1h"] == pytest.approx(50.0)
    assert report["firing"] == []
    assert report["not_judged"] == ["page-1h", "page-6h", "ticket-72h"]


def test_the_budget_survives_a_restart_of_recorder_and_counters(engine: Engine) -> None:
    clock, serving = FakeClock(START), FakeServing()
    first = SloRecorder(engine, serving, clock=clock)
    serving.serve(ok=90, failed=10)
    clock.advance(10)
    record(first)
    serving.restart()  # a new ``modelplane up``: counters and recorder start afresh
    clock.advance(60)
    second = SloRecorder(engine, serving, clock=clock)
    before = record(second)[ENDPOINT]["availability"]
    assert (before["good"], before["total"]) == (90, 100)
    serving.serve(ok=100)
    clock.advance(10)
    after = record(second)[ENDPOINT]["availability"]
    assert (after["good"], after["total"]) == (190, 200)


def test_a_failed_write_leaves_the_counts_to_the_next_interval(engine: Engine) -> None:
    clock, serving = FakeClock(START), FakeServing()
    recorder = SloRecorder(engine, serving, clock=clock)
    serving.serve(ok=10)
    clock.advance(10)
    record(recorder)
    serving.serve(ok=5, failed=1)
    unreachable = open_engine("postgresql://postgres@127.0.0.1:1/x", migrate_schema=False)
    recorder.engine = unreachable  # the store goes away for one interval
    clock.advance(10)
    asyncio.run(recorder.run(_stopped()))  # one pass, its error logged, not raised
    unreachable.dispose()
    recorder.engine = engine
    clock.advance(10)
    report = record(recorder)[ENDPOINT]["availability"]
    assert (report["good"], report["total"]) == (15, 16)


def _stopped() -> asyncio.Event:
    stop = asyncio.Event()
    stop.set()
    return stop


def test_old_intervals_merge_into_hourly_rows_with_the_same_sums(engine: Engine) -> None:
    clock, serving = FakeClock(START), FakeServing()
    recorder = SloRecorder(engine, serving, clock=clock, compact_every_s=HOUR_S)
    for _ in range(30):  # five hours of 10-minute intervals
        serving.serve(ok=9, failed=1)
        clock.advance(600)
        record(recorder)
    before = record(recorder)[ENDPOINT]
    clock.advance(8 * HOUR_S)
    after = record(recorder)[ENDPOINT]  # compacts: all of it is older than six hours now
    rows = intervals(engine)
    assert {row[2] for row in rows} == {BUCKET_S}
    assert all(row[1] % BUCKET_S == 0 for row in rows)
    assert 5 <= len(rows) <= 6
    assert sum(row[4] for row in rows) == 300
    for objective in ("availability", "latency"):
        assert after[objective]["total"] == before[objective]["total"]
        assert after[objective]["good"] == before[objective]["good"]
    assert after["availability"]["burn_rates"]["6h"] == 0.0
    assert after["availability"]["burn_rates"]["3d"] == pytest.approx(10.0)


def test_rows_past_every_window_are_pruned_and_reports_of_deleted_endpoints_go(
    engine: Engine,
) -> None:
    clock, serving = FakeClock(START), FakeServing(SLO(window_days=1))
    ResourceStore(engine).apply("Endpoint", ENDPOINT, {"name": ENDPOINT}, actor="t")
    recorder = SloRecorder(engine, serving, clock=clock, compact_every_s=DAY_S)
    serving.serve(ok=10)
    serving.serve(ok=4, name="gone")
    clock.advance(10)
    record(recorder)
    assert {r.name for r in ResourceStore(engine).list(KIND)} == {ENDPOINT, "gone"}
    del serving.counters["gone"]
    clock.advance(2 * DAY_S)
    record(recorder)  # the three-day ticket window still needs the rows
    assert len(intervals(engine)) == 2
    clock.advance(2 * DAY_S)
    report = record(recorder)[ENDPOINT]
    assert report["availability"]["total"] == 0
    assert [row[0] for row in intervals(engine)] == ["gone"]  # not served: kept for now
    assert [r.name for r in ResourceStore(engine).list(KIND)] == [
        ENDPOINT
    ]  # "gone" was never applied


def test_run_records_at_start_every_interval_and_once_stopped(engine: Engine) -> None:
    serving = FakeServing()
    recorder = SloRecorder(engine, serving, interval_s=0.05)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        serving.serve(ok=3)
        await asyncio.sleep(0.3)
        serving.serve(ok=2, failed=1)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(scenario())
    assert sum(row[4] for row in intervals(engine)) == 6
    status = ResourceStore(engine).get(KIND, ENDPOINT).status
    assert status is not None
    assert (status["availability"]["good"], status["availability"]["total"]) == (5, 6)

"""Compaction: a replica's minute intervals older than FINE_S merge into hourly runs, a gap
stays a gap, shards and young rows stay as they are, and every report figure (cost by team,
reserved and used resource-seconds, peaks, teams + idle = nodes) is the same before and
after; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from modelplane.observe.cost import cost_report, group_usage
from modelplane.observe.usage import (
    NodeInterval,
    UsageInterval,
    WorkloadKind,
    read_nodes,
    read_usage,
    record_period,
)
from modelplane.observe.usage_compact import FINE_S, compact
from modelplane.store.db import open_engine, read_session
from modelplane.store.schema import UsageIntervalRow, UsageNodeRow

pytestmark = pytest.mark.timeout(120)

T0 = 1_800_000_000.0 - (1_800_000_000.0 % 3600)  # on the hour
MINUTE = 60.0


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def minute(k: int, replica: int, *, cpu: float, memory: float) -> UsageInterval:
    return UsageInterval(
        kind=WorkloadKind.REPLICA,
        team="risk" if replica == 0 else "growth",
        node="n1",
        start=T0 + k * MINUTE,
        end=T0 + (k + 1) * MINUTE,
        endpoint=f"e{replica}",
        version="m:1",
        replica=replica,
        cpu_milli=2000,
        memory_mib=4096,
        cpu_seconds=cpu,
        cpu_peak_milli=cpu / MINUTE * 1000 * 1.5,
        memory_peak_mib=memory * 1.2,
        memory_mean_mib=memory,
        samples=12,
    )


def seed(engine: Engine, minutes: int = 180) -> None:
    usage = [minute(k, 0, cpu=10.0 + k % 7, memory=300.0 + k) for k in range(minutes)]
    # replica 1 is down from minute 40 to 50: a gap that must stay one
    usage += [minute(k, 1, cpu=2.0, memory=100.0) for k in range(minutes) if not 40 <= k < 50]
    usage.append(
        UsageInterval(
            kind=WorkloadKind.SHARD,
            team="growth",
            tier="batch",
            node="n1",
            start=T0 + 100,
            end=T0 + 130,
            job="j",
            shard=0,
            cpu_milli=1000,
            memory_mib=512,
            cpu_seconds=25.0,
            memory_peak_mib=400,
        )
    )
    nodes = [
        NodeInterval(
            node="n1",
            start=T0 + k * MINUTE,
            end=T0 + (k + 1) * MINUTE,
            cpu_milli=8000,
            memory_mib=16384,
            cost_per_hour=1.0,
        )
        for k in range(minutes)
    ]
    record_period(engine, usage, nodes)


def figures(engine: Engine, since: float, until: float) -> dict[str, Any]:
    usage, nodes = read_usage(engine, since, until), read_nodes(engine, since, until)
    report = cost_report(usage, nodes, since, until)
    groups = {g.name: g for g in group_usage(usage, nodes)}
    return {
        "nodes": report.nodes_cost,
        "idle": report.idle_cost,
        "teams": {t.team: (t.cost, dict(t.reserved), dict(t.used)) for t in report.teams},
        "peaks": {name: dict(g.peak) for name, g in groups.items()},
        "saving": {name: g.saving_at_peak for name, g in groups.items()},
    }


def count(engine: Engine, row: type[Any]) -> int:
    with read_session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(row)) or 0)


def close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == pytest.approx(b, rel=1e-9, abs=1e-9))


def test_merging_keeps_every_figure_and_the_gap(engine: Engine) -> None:
    seed(engine)
    whole = (T0, T0 + 3 * 3600)
    before = figures(engine, *whole)
    assert count(engine, UsageIntervalRow) == 180 + 170 + 1
    removed = compact(engine, T0 + 3 * 3600 + FINE_S)
    # each replica: 3 hourly runs, and one more for the gap; the shard; nodes: 3 hours
    assert count(engine, UsageIntervalRow) == 3 + 4 + 1
    assert count(engine, UsageNodeRow) == 3
    assert removed == (180 + 170 + 180) - (3 + 4 + 3)
    assert close(figures(engine, *whole), before)
    e1 = sorted((i.start, i.end) for i in read_usage(engine, *whole) if i.endpoint == "e1")
    assert e1[0] == (T0, T0 + 40 * MINUTE)
    assert e1[1] == (T0 + 50 * MINUTE, T0 + 3600)
    merged = next(i for i in read_usage(engine, *whole) if i.endpoint == "e0")
    assert merged.samples == 60 * 12
    assert compact(engine, T0 + 3 * 3600 + FINE_S) == 0  # nothing left to merge


def test_young_rows_stay_and_a_backlog_goes_in_bounded_passes(engine: Engine) -> None:
    seed(engine, minutes=60 * 30)  # 30 hours
    rows = count(engine, UsageIntervalRow)
    assert compact(engine, T0 + 30 * 3600) > 0  # the rows before T0 + 24h merge
    young = [
        i for i in read_usage(engine, T0 + 24 * 3600, T0 + 30 * 3600) if i.start >= T0 + 24 * 3600
    ]
    assert len(young) == 2 * 6 * 60  # the last six hours are untouched
    first_day = count(engine, UsageIntervalRow)
    assert first_day < rows
    passes = [compact(engine, T0 + 40 * 3600, max_rows=1000) for _ in range(8)]
    assert passes[0] > 0
    assert passes[-1] == 0  # each pass merged the oldest 1,000 rows at most, until none
    assert count(engine, UsageIntervalRow) == 2 * 30 + 1 + 1  # hourly, the gap, the shard

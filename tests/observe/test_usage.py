"""Usage intervals: validation that names the field, and storage on SQLite and PostgreSQL
(stored as given, read back clipped to the period asked for)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from modelplane.errors import InvalidSpec
from modelplane.observe.usage import (
    NodeInterval,
    UsageInterval,
    WorkloadKind,
    as_document,
    read_nodes,
    read_usage,
    record_nodes,
    record_usage,
)
from modelplane.store.db import open_engine, read_session
from modelplane.store.schema import UsageIntervalRow

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000.0


def replica(start: float = T0, end: float = T0 + 60, **changes: object) -> UsageInterval:
    values: dict[str, object] = {
        "kind": WorkloadKind.REPLICA,
        "team": "risk",
        "node": "node-a",
        "start": start,
        "end": end,
        "endpoint": "fraud-score",
        "route": "stable",
        "version": "fraud:1",
        "replica": 0,
        "cpu_milli": 2000,
        "memory_mib": 1024,
        "cpu_seconds": 30.0,
        "cpu_peak_milli": 900.0,
        "memory_peak_mib": 200.0,
        "memory_mean_mib": 150.0,
        "samples": 12,
    }
    return UsageInterval(**(values | changes))  # type: ignore[arg-type]


def shard(**changes: object) -> UsageInterval:
    values: dict[str, object] = {
        "kind": "shard",
        "team": "growth",
        "tier": "batch",
        "node": "node-a",
        "start": T0,
        "end": T0 + 100,
        "job": "score-q3",
        "shard": 4,
        "cpu_milli": 1000,
        "memory_mib": 512,
        "gpu_fraction": 0.5,
        "gpu_model": "A100",
        "cpu_seconds": 80.0,
        "gpu_util": 0.4,
        "queue_wait_s": 12.5,
    }
    return UsageInterval(**(values | changes))  # type: ignore[arg-type]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def stored_rows(engine: Engine) -> int:
    with read_session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(UsageIntervalRow)) or 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"end": T0 - 1}, "end"),
        ({"cpu_milli": -1}, "cpu_milli"),
        ({"gpu_fraction": float("nan")}, "gpu_fraction"),
        ({"memory_mean_mib": 300.0}, "memory_mean_mib"),
        ({"endpoint": None}, "endpoint"),
        ({"team": ""}, "team"),
        ({"kind": "daemon"}, "kind"),
        ({"node": "n" * 64}, "node"),
        ({"replica": -2}, "replica"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        replica(**changes)
    assert caught.value.details[0]["field"] == field
    assert field in str(caught.value)


def test_a_shard_needs_its_job_and_index() -> None:
    with pytest.raises(InvalidSpec, match="shard"):
        shard(shard=None)
    assert shard().kind is WorkloadKind.SHARD  # given as text, kept as the enum
    assert shard().workload == "score-q3/shard-4"
    assert replica().workload == "fraud-score/fraud:1#0"


def test_clipping_scales_cpu_time_and_keeps_peaks() -> None:
    clipped = replica().clipped(T0 + 15, T0 + 1000)
    assert clipped is not None
    assert (clipped.start, clipped.end, clipped.cpu_seconds) == (T0 + 15, T0 + 60, 22.5)
    assert clipped.memory_peak_mib == 200.0
    assert replica().clipped(T0 + 61, T0 + 100) is None
    assert replica().clipped(T0 - 10, T0 + 100) == replica()


def test_intervals_round_trip_and_read_back_clipped(engine: Engine) -> None:
    record_usage(engine, replica(), replica(T0 + 60, T0 + 120, replica=1), shard())
    record_nodes(
        engine,
        NodeInterval(node="node-a", start=T0, end=T0 + 120, cpu_milli=8000, memory_mib=32768,
                     gpu_count=1, gpu_model="A100", cost_per_hour=3.6),
    )  # fmt: skip
    everything = read_usage(engine, T0, T0 + 120)
    assert [as_document(i) for i in everything] == [
        as_document(i) for i in (replica(), shard(), replica(T0 + 60, T0 + 120, replica=1))
    ]
    tail = read_usage(engine, T0 + 90, T0 + 200, teams=["risk"])
    assert [(i.start, i.end, i.cpu_seconds) for i in tail] == [(T0 + 90, T0 + 120, 15.0)]
    assert read_usage(engine, T0, T0 + 200, kinds=[WorkloadKind.SHARD]) == [shard()]
    (node,) = read_nodes(engine, T0 + 60, T0 + 600)
    assert (node.start, node.end, node.cost_per_hour, node.gpu_count) == (T0 + 60, T0 + 120, 3.6, 1)


def test_a_bad_interval_among_good_ones_stores_nothing(engine: Engine) -> None:
    with pytest.raises(InvalidSpec):
        record_usage(engine, replica(), replica(cpu_seconds=-5))
    assert stored_rows(engine) == 0

"""Shard plans, tasks and outcomes: plain data, no I/O."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.jobs import (
    OutcomeStatus,
    ShardOutcome,
    ShardPlan,
    ShardReservation,
    part_name,
    plan_row_ranges,
    shard_id,
)
from modelplane.spec.io import parse
from modelplane.spec.job import Job


@settings(deadline=None)  # a loaded 2-core machine is slow, not wrong
@given(st.integers(0, 100_000), st.integers(1, 50_000))
def test_row_ranges_cover_every_row_once_in_order(total: int, per_shard: int) -> None:
    plans = plan_row_ranges(total, per_shard)
    assert [p.index for p in plans] == list(range(len(plans)))
    assert plans[0].row_start == 0
    assert plans[-1].row_stop == max(total, 0)
    for before, after in itertools.pairwise(plans):
        assert before.row_stop == after.row_start
    assert all(p.expected_rows <= per_shard for p in plans)
    assert sum(p.expected_rows for p in plans) == total


def test_an_empty_input_is_one_empty_shard() -> None:
    assert plan_row_ranges(0, 10) == (ShardPlan(0, 0, 0),)


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="rows_per_shard"):
        plan_row_ranges(10, 0)
    with pytest.raises(ValueError, match="rows"):
        ShardPlan(0, 5, 2)
    with pytest.raises(ValueError, match="negative"):
        ShardPlan(-1, 0, 2)


def test_names_and_ids() -> None:
    assert part_name(3) == "part-00003.parquet"
    assert sorted(part_name(i) for i in (10, 2, 1)) == [part_name(1), part_name(2), part_name(10)]
    assert shard_id("uid", 4) == "uid/4"
    outcome = ShardOutcome("uid", 4, 2, OutcomeStatus.DONE, started_at=10.0, finished_at=12.5)
    assert (outcome.shard_id, outcome.attempt_id, outcome.wall_seconds) == ("uid/4", "uid/4#2", 2.5)


def test_the_reservation_in_scheduler_units() -> None:
    shard = {"cpu": 0.5, "memory_mb": 300, "gpus": 0.25, "gpu_model": "A10"}
    work = {"type": "materialize", "feature_set": "f", "input": {"url": "x"}}
    job = parse(Job, {"name": "j", "team": "t", "resources": shard, "work": work})
    assert ShardReservation.of(job) == ShardReservation(500, 300, 250, "A10")

from __future__ import annotations

import math

import pytest

from modelplane.core.batching import (
    ArrivalStats,
    BatchingConfig,
    FlushDecision,
    QueueState,
    decide_flush,
    observe_arrival,
)

CFG = BatchingConfig(max_batch_size=8, max_delay_s=0.010, stall_factor=2.0, wait_when_idle=True)
GREEDY = BatchingConfig(max_batch_size=8, max_delay_s=0.010)
NOW = 100.0
STEADY = ArrivalStats(last_arrival=NOW - 0.001, mean_gap_s=0.002)
"""Arrivals every ~2 ms, the last one 1 ms ago: another is expected in ~1 ms."""

CASES: list[tuple[str, QueueState, FlushDecision]] = [
    (
        "empty queue waits for an arrival",
        QueueState(queued_rows=0, oldest_enqueued_at=None, worker_idle=True),
        FlushDecision(False, 0, math.inf),
    ),
    (
        "full batch flushes even with a busy worker",
        QueueState(queued_rows=8, oldest_enqueued_at=NOW, worker_idle=False, arrivals=STEADY),
        FlushDecision(True, 8, 0.0),
    ),
    (
        "more than full takes one full batch",
        QueueState(queued_rows=30, oldest_enqueued_at=NOW, worker_idle=True, arrivals=STEADY),
        FlushDecision(True, 8, 0.0),
    ),
    (
        "oldest waited max_delay: flush a partial batch",
        QueueState(queued_rows=3, oldest_enqueued_at=NOW - 0.010, worker_idle=False),
        FlushDecision(True, 8, 0.0),
    ),
    (
        "busy worker: keep collecting until the window closes",
        QueueState(
            queued_rows=3, oldest_enqueued_at=NOW - 0.004, worker_idle=False, arrivals=STEADY
        ),
        FlushDecision(False, 0, pytest.approx(0.006)),  # type: ignore[arg-type]
    ),
    (
        "idle worker, a lone request with no arrival history: flush now",
        QueueState(queued_rows=1, oldest_enqueued_at=NOW, worker_idle=True),
        FlushDecision(True, 8, 0.0),
    ),
    (
        "idle worker, arrivals stopped (no arrival for stall_factor gaps): flush now",
        QueueState(
            queued_rows=2,
            oldest_enqueued_at=NOW - 0.005,
            worker_idle=True,
            arrivals=ArrivalStats(last_arrival=NOW - 0.005, mean_gap_s=0.002),
        ),
        FlushDecision(True, 8, 0.0),
    ),
    (
        "idle worker, next arrival expected after the window: flush now",
        QueueState(
            queued_rows=1,
            oldest_enqueued_at=NOW - 0.001,
            worker_idle=True,
            arrivals=ArrivalStats(last_arrival=NOW - 0.001, mean_gap_s=0.020),
        ),
        FlushDecision(True, 8, 0.0),
    ),
    (
        "idle worker, steady arrivals: wait until the expected one plus slack",
        QueueState(
            queued_rows=2, oldest_enqueued_at=NOW - 0.003, worker_idle=True, arrivals=STEADY
        ),
        FlushDecision(False, 0, pytest.approx(0.003)),  # type: ignore[arg-type]
    ),
    (
        "idle worker, steady arrivals but window ends first: wait for the window",
        QueueState(
            queued_rows=2, oldest_enqueued_at=NOW - 0.009, worker_idle=True, arrivals=STEADY
        ),
        FlushDecision(False, 0, pytest.approx(0.001)),  # type: ignore[arg-type]
    ),
]


@pytest.mark.parametrize(("state", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_flush(state: QueueState, expected: FlushDecision) -> None:
    assert decide_flush(state, CFG, NOW) == expected


def test_zero_delay_flushes_at_once() -> None:
    config = BatchingConfig(max_batch_size=8, max_delay_s=0.0)
    state = QueueState(queued_rows=1, oldest_enqueued_at=NOW, worker_idle=False, arrivals=STEADY)
    assert decide_flush(state, config, NOW).flush_now


def test_observe_arrival_averages_and_caps_gaps() -> None:
    first = observe_arrival(ArrivalStats(), 10.0, CFG)
    assert first == ArrivalStats(last_arrival=10.0, mean_gap_s=None)
    second = observe_arrival(first, 10.002, CFG)
    assert second.mean_gap_s == pytest.approx(0.002)
    third = observe_arrival(second, 10.004, CFG)
    assert third.mean_gap_s == pytest.approx(0.002)
    # a lull of an hour counts as four windows, so the average recovers quickly
    after_lull = observe_arrival(third, 3610.0, CFG)
    assert after_lull.mean_gap_s == pytest.approx(0.2 * 0.040 + 0.8 * 0.002)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch_size": 0}, {"max_delay_s": -1.0}, {"stall_factor": 0.5}, {"ewma_alpha": 0.0}],
)
def test_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatchingConfig(**kwargs)  # type: ignore[arg-type]


def test_by_default_an_idle_worker_gets_what_is_queued_at_once() -> None:
    state = QueueState(queued_rows=2, oldest_enqueued_at=NOW, worker_idle=True, arrivals=STEADY)
    assert decide_flush(state, GREEDY, NOW) == FlushDecision(flush_now=True, take=8, wait_s=0.0)
    busy = QueueState(queued_rows=2, oldest_enqueued_at=NOW, worker_idle=False, arrivals=STEADY)
    assert not decide_flush(busy, GREEDY, NOW).flush_now

"""Weighted route choice with a seeded random source."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.core.routing import WeightedChoice, key_point


def test_single_route_needs_no_draw() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    assert [WeightedChoice([0, 5, 0], rng).pick() for _ in range(5)] == [1] * 5
    assert rng.getstate() == state


def test_picks_follow_the_weights_and_skip_zero() -> None:
    choice = WeightedChoice([90, 0, 10], random.Random(42))
    counts = Counter(choice.pick() for _ in range(10_000))
    assert counts[1] == 0
    assert 0.87 < counts[0] / 10_000 < 0.93


def test_same_seed_same_picks() -> None:
    first = WeightedChoice([1, 1, 1], random.Random(3))
    second = WeightedChoice([1, 1, 1], random.Random(3))
    assert [first.pick() for _ in range(50)] == [second.pick() for _ in range(50)]


@pytest.mark.parametrize("weights", [[], [0, 0], [-1, 2]])
def test_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError):
        WeightedChoice(weights, random.Random(0))


def test_key_points_are_stable_and_spread() -> None:
    assert key_point("customer-42") == key_point("customer-42")
    # a fixed value: the same in every process and release (hash() is salted per process)
    assert key_point("customer-42") == pytest.approx(0.202652, abs=1e-6)
    points = [key_point(f"k{i}") for i in range(4000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert 0.45 < sum(p < 0.5 for p in points) / 4000 < 0.55


@given(
    keys=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40),
    before=st.floats(min_value=0.0, max_value=100.0),
    grow=st.floats(min_value=0.0, max_value=100.0),
)
def test_a_key_on_the_canary_stays_there_as_the_canary_grows(
    keys: list[str], before: float, grow: float
) -> None:
    after = min(before + grow, 100.0)
    rng = random.Random(0)

    def route(canary: float, key: str) -> int:
        if canary <= 0.0:
            return 0
        if canary >= 100.0:
            return 1
        return WeightedChoice([100.0 - canary, canary], rng).pick_at(key_point(key))

    for key in keys:
        if route(before, key) == 1:
            assert route(after, key) == 1

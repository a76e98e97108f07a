"""Weighted route choice with a seeded random source."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from modelplane.core.routing import WeightedChoice


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

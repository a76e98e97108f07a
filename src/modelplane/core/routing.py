"""Traffic choice among an endpoint's routes: by weight, with an injected random source."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence

__all__ = ["WeightedChoice"]


class WeightedChoice:
    """Picks route indices in proportion to their weights; zero weights are never picked.

    The cumulative weights are computed once, so a pick is one random draw and one bisect;
    a single positive route is picked without drawing at all.
    """

    __slots__ = ("_cumulative", "_only", "_rng", "_total")

    def __init__(self, weights: Sequence[float], rng: random.Random) -> None:
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self._cumulative = list(itertools.accumulate(weights))
        self._total = self._cumulative[-1]
        positive = [i for i, w in enumerate(weights) if w > 0]
        self._only = positive[0] if len(positive) == 1 else None
        self._rng = rng

    def pick(self) -> int:
        if self._only is not None:
            return self._only
        # bisect_right skips zero-weight routes: their cumulative equals the previous one
        point = self._rng.random() * self._total
        return min(bisect.bisect_right(self._cumulative, point), len(self._cumulative) - 1)

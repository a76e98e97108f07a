"""Traffic choice among an endpoint's routes: by weight, with an injected random source, or
by a request key's hash (sticky: one caller stays on one version).

A key's hash is a fixed point in ``[0, 1)``, and routes own consecutive slices of that
interval in their listed order. Moving weight from the first route to a later one moves
only the keys on the slice boundary: a caller that reached the canary at 5 % still reaches
it at 25 %.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Sequence

__all__ = ["WeightedChoice", "key_point"]


def key_point(key: str) -> float:
    """A stable point in ``[0, 1)`` for ``key``, the same in every process and release
    (Python's own ``hash`` of a string is salted per process)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


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
        return self.pick_at(self._rng.random())

    def pick_at(self, point: float) -> int:
        """The route whose slice holds ``point`` (in ``[0, 1)``, e.g. :func:`key_point`)."""
        if self._only is not None:
            return self._only
        # bisect_right skips zero-weight routes: their cumulative equals the previous one
        scaled = point * self._total
        return min(bisect.bisect_right(self._cumulative, scaled), len(self._cumulative) - 1)

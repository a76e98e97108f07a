"""Per-route evidence for rollout gates: cumulative counters read in-process.

Each model version behind an endpoint keeps one :class:`RouteStats`: requests, errors, a
latency histogram (Prometheus-style ``le`` bounds that include the contract's latency
objective, so an SLO count is exact) and the first output's distribution: a histogram over
fixed bounds for numbers, counts per label otherwise. The hot path is a few integer adds
into preallocated lists, no lock (one event loop writes) and no allocation for numbers.

Counters only grow; :meth:`RouteStats.snapshot` returns them as a cumulative
:class:`~modelplane.core.gates.ArmStats` and the rollout controller diffs two snapshots to
get a window.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from modelplane.core.drift import Histogram
from modelplane.core.gates import ArmStats

__all__ = ["LABEL_KINDS", "LATENCY_BOUNDS_MS", "OUTPUT_BOUNDS", "RouteStats", "latency_bounds"]

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
)  # fmt: skip

_UNIT = tuple(round(i * 0.05, 2) for i in range(1, 21))
_WIDE = (1.5, 2, 3, 5, 10, 20, 50, 100, 1e3, 1e4, 1e5, 1e6)
OUTPUT_BOUNDS: tuple[float, ...] = (
    *(-b for b in reversed(_WIDE)),
    -1.0, -0.5, -0.25, -0.1, 0.0, *_UNIT, *_WIDE, math.inf,
)  # fmt: skip
"""Fixed bins for numeric outputs: both versions must share bins for PSI, and a score's
natural range (0 to 1) gets 20 of them."""

LABEL_KINDS = frozenset("biuUSO")
"""numpy dtype kinds whose values are labels (counted), not numbers (binned)."""


def latency_bounds(objective_ms: float | None) -> tuple[float, ...]:
    """:data:`LATENCY_BOUNDS_MS` with the latency objective added, and ``inf`` last."""
    extra = () if objective_ms is None else (float(objective_ms),)
    return (*sorted({*LATENCY_BOUNDS_MS, *extra}), math.inf)


class RouteStats:
    """Cumulative counters of one route; see the module docstring."""

    __slots__ = ("errors", "labels", "latency", "latency_bounds", "numeric", "output", "requests")

    def __init__(self, objective_ms: float | None = None, output: str | None = None) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_bounds = latency_bounds(objective_ms)
        self.latency = [0] * len(self.latency_bounds)
        self.output = output
        """The output whose distribution is kept; the first one answered when unset."""
        self.numeric = [0] * len(OUTPUT_BOUNDS)
        self.labels: dict[Any, int] = {}

    def ok(self, latency_s: float, outputs: Mapping[str, npt.NDArray[Any]]) -> None:
        """Count an answer; its first row's value of the tracked output joins the histogram."""
        self.requests += 1
        self.latency[bisect.bisect_left(self.latency_bounds, latency_s * 1000.0)] += 1
        name = self.output
        if name is None:
            name = self.output = next(iter(outputs), None)
        array = outputs.get(name) if name is not None else None
        if array is None or not array.size:
            return
        value = array.item(0)  # a plain Python scalar: cheaper to bin and hash than numpy's
        if array.dtype.kind in LABEL_KINDS:
            self.labels[value] = self.labels.get(value, 0) + 1
        elif value == value:  # noqa: PLR0124  NaN has no bin, and is the one value unequal to itself
            self.numeric[bisect.bisect_left(OUTPUT_BOUNDS, value)] += 1

    def failed(self, latency_s: float | None) -> None:
        """Count a failure of this route (served by the fallback or not); ``None`` when it
        was refused without trying (an open circuit), which says nothing of its latency."""
        self.requests += 1
        self.errors += 1
        if latency_s is not None:
            self.latency[bisect.bisect_left(self.latency_bounds, latency_s * 1000.0)] += 1

    def snapshot(self) -> ArmStats:
        """The cumulative counts as the gates' type (copied: safe to keep)."""
        latency = Histogram(self.latency_bounds, tuple(self.latency))
        numeric: dict[str, Histogram] = {}
        labels: dict[str, dict[str, int]] = {}
        if self.output is not None and any(self.numeric):
            numeric[self.output] = Histogram(OUTPUT_BOUNDS, tuple(self.numeric))
        if self.output is not None and self.labels:
            labels[self.output] = {str(k): v for k, v in self.labels.items()}
        return ArmStats(self.requests, self.errors, latency, numeric, labels)

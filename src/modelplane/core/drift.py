"""Distributions and the distances between them: histograms, shared bins, PSI, Jensen-Shannon.

Numeric outputs are compared as histograms over bins both versions share (the bins come
from stable's values, at its quantiles, so each bin holds about as much of stable's mass);
labels are compared as counts per label. Histograms use Prometheus-style upper bounds
(``le``), so the data plane can feed its metric buckets straight in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "PSI_EPSILON",
    "Histogram",
    "bin_counts",
    "js_divergence",
    "label_js",
    "psi",
    "quantile_bins",
]

PSI_EPSILON = 1e-4
"""Share given to an empty bin: PSI's log is infinite at zero, and one empty bin in a
window is sampling noise, not infinite drift."""

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bucket; ``bounds[i]`` is bucket ``i``'s inclusive upper bound (``le``).

    Counts are per bucket, not cumulative. The last bound may be ``inf``; values above a
    finite last bound are simply not represented.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts) or not self.bounds:
            raise ValueError("a histogram needs one count per bound, and at least one bound")
        if any(b >= a for a, b in zip(self.bounds[1:], self.bounds, strict=False)):
            raise ValueError("histogram bounds must increase")
        if any(c < 0 for c in self.counts):
            raise ValueError("histogram counts cannot be negative")

    @property
    def total(self) -> int:
        return sum(self.counts)

    def count_at_most(self, value: float) -> int:
        """Samples in buckets whose upper bound is at most ``value`` (a lower bound on <=)."""
        return sum(c for b, c in zip(self.bounds, self.counts, strict=True) if b <= value)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, linear within its bucket, as Prometheus' histogram_quantile.

        The first bucket is taken to start at 0 (latencies, scores) unless its bound is
        negative; a quantile in an ``inf`` bucket answers the last finite bound.
        ``None`` when the histogram is empty.
        """
        total = self.total
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, (bound, count) in enumerate(zip(self.bounds, self.counts, strict=True)):
            if count and seen + count >= rank:
                if math.isinf(bound):
                    return self.bounds[i - 1] if i > 0 else 0.0
                lower = self.bounds[i - 1] if i > 0 else min(0.0, bound)
                return lower + (bound - lower) * (rank - seen) / count
            seen += count
        return self.bounds[-1]


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected``, counts over shared bins.

    ``sum((a - e) * ln(a / e))`` over bin shares, each share floored at ``epsilon``.
    Rules of thumb: under 0.1 stable, 0.1-0.2 moderate, over 0.2 significant drift.
    """
    e, a = _shares(expected), _shares(actual)
    if len(e) != len(a):
        raise ValueError("PSI needs counts over the same bins")
    e, a = np.maximum(e, epsilon), np.maximum(a, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence (base 2, so in ``[0, 1]``) of two count vectors."""
    ps, qs = _shares(p), _shares(q)
    if len(ps) != len(qs):
        raise ValueError("Jensen-Shannon needs counts over the same categories")
    m = (ps + qs) / 2
    value = (_kl(ps, m) + _kl(qs, m)) / 2
    # rounding can leave a hair outside [0, 1]; the true value never is
    return min(1.0, max(0.0, value))


def label_js(stable: Mapping[str, int], canary: Mapping[str, int]) -> float:
    """Jensen-Shannon divergence of two label counts; a label one side never saw counts 0."""
    labels = sorted(set(stable) | set(canary))
    return js_divergence(
        [stable.get(label, 0) for label in labels], [canary.get(label, 0) for label in labels]
    )


def quantile_bins(values: Iterable[float], bins: int = 10) -> tuple[float, ...]:
    """Upper bounds of about ``bins`` buckets holding equal shares of ``values``, then ``inf``.

    Ties collapse (a constant output gives one finite bound), so every bound is distinct.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        raise ValueError("quantile bins need at least one value")
    if not np.all(np.isfinite(data)):
        raise ValueError("quantile bins need finite values")
    inner = np.quantile(data, np.linspace(0.0, 1.0, bins + 1)[1:-1]) if bins > 1 else data[:0]
    finite = sorted({float(e) for e in inner} | {float(data.max())})
    return (*finite, math.inf)


def bin_counts(values: Iterable[float], bounds: Sequence[float]) -> tuple[int, ...]:
    """Counts of ``values`` per bucket of ``bounds`` (``le`` upper bounds, as Histogram)."""
    data = np.asarray(list(values), dtype=np.float64)
    edges = np.asarray(bounds, dtype=np.float64)
    index = np.searchsorted(edges, data, side="left")
    counts = np.bincount(index[index < len(edges)], minlength=len(edges))
    return tuple(int(c) for c in counts)


def _shares(counts: Sequence[float]) -> Floats:
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError("a distribution is a non-empty vector of non-negative counts")
    total = arr.sum()
    if total <= 0:
        raise ValueError("a distribution needs at least one count")
    shares: Floats = arr / total
    return shares


def _kl(p: Floats, m: Floats) -> float:
    """KL(p || m) in bits, where ``m > 0`` wherever ``p > 0`` (m is a mixture with p)."""
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))

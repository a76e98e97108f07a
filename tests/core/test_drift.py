"""Distributions: histogram quantiles, shared bins, PSI and Jensen-Shannon, by hand and property."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.drift import (
    Histogram,
    bin_counts,
    js_divergence,
    label_js,
    psi,
    quantile_bins,
)

counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12).filter(
    lambda c: sum(c) > 0
)


def pair(size: int = 12) -> st.SearchStrategy[tuple[list[int], list[int]]]:
    """Two count vectors of one length, each with at least one count."""
    return st.integers(min_value=1, max_value=size).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 10_000), min_size=n, max_size=n).filter(any),
            st.lists(st.integers(0, 10_000), min_size=n, max_size=n).filter(any),
        )
    )


def test_psi_by_hand() -> None:
    # shares .5/.5 against .25/.75: .25 ln 2 + .25 ln 1.5
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))


def test_psi_floors_empty_bins_instead_of_going_infinite() -> None:
    value = psi([100, 0], [50, 50])
    assert math.isfinite(value)
    assert value > 1.0


def test_js_by_hand() -> None:
    assert js_divergence([1, 0], [0, 1]) == 1.0
    # m = (.75, .25); (KL(p||m) + KL(q||m)) / 2 with KL in bits
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    assert js_divergence([1, 1], [1, 0]) == pytest.approx((kl_p + kl_q) / 2)


def test_label_js_aligns_labels_either_side_never_saw() -> None:
    assert label_js({"fraud": 10}, {"ok": 10}) == 1.0
    assert label_js({"ok": 90, "fraud": 10}, {"fraud": 1, "ok": 9}) == 0.0


@pytest.mark.parametrize(("p", "q"), [([], []), ([1, 2], [1]), ([0, 0], [1, 1]), ([-1, 2], [1, 1])])
def test_malformed_distributions_are_refused(p: list[int], q: list[int]) -> None:
    with pytest.raises(ValueError, match=r"distribution|same"):
        psi(p, q)
    with pytest.raises(ValueError, match=r"distribution|same"):
        js_divergence(p, q)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    h = Histogram((10.0, 20.0, math.inf), (50, 40, 10))
    assert h.quantile(0.5) == 10.0
    assert h.quantile(0.7) == 15.0
    assert h.quantile(0.9) == 20.0
    assert h.quantile(0.95) == 20.0  # in the +Inf bucket: the last finite bound
    assert Histogram((1.0,), (0,)).quantile(0.5) is None
    assert h.count_at_most(20.0) == 90


@pytest.mark.parametrize(
    ("bounds", "hist_counts"), [((), ()), ((1.0, 2.0), (1,)), ((2.0, 1.0), (1, 1)), ((1.0,), (-1,))]
)
def test_malformed_histograms_are_refused(
    bounds: tuple[float, ...], hist_counts: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="histogram"):
        Histogram(bounds, hist_counts)


def test_quantile_bins_from_stable_and_counts_per_bin() -> None:
    values = [float(v) for v in range(100)]
    bounds = quantile_bins(values, bins=4)
    assert bounds == (24.75, 49.5, 74.25, 99.0, math.inf)
    assert bin_counts(values, bounds) == (25, 25, 25, 25, 0)
    assert bin_counts([1000.0, -5.0], bounds) == (1, 0, 0, 0, 1)


def test_quantile_bins_collapse_ties() -> None:
    assert quantile_bins([3.0] * 50, bins=10) == (3.0, math.inf)
    with pytest.raises(ValueError, match="at least one"):
        quantile_bins([])
    with pytest.raises(ValueError, match="finite"):
        quantile_bins([1.0, math.nan])


@settings(max_examples=60, deadline=None)
@given(counts)
def test_psi_of_a_distribution_with_itself_is_zero(c: list[int]) -> None:
    assert psi(c, c) == 0.0


@settings(max_examples=60, deadline=None)
@given(counts)
def test_js_of_a_distribution_with_itself_is_zero(c: list[int]) -> None:
    assert js_divergence(c, c) == 0.0


@settings(max_examples=60, deadline=None)
@given(pair())
def test_js_is_symmetric_and_within_zero_and_one(pq: tuple[list[int], list[int]]) -> None:
    p, q = pq
    value = js_divergence(p, q)
    assert 0.0 <= value <= 1.0
    assert value == js_divergence(q, p)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.integers(1, 20))
def test_quantile_bins_hold_every_stable_value(values: list[float], bins: int) -> None:
    bounds = quantile_bins(values, bins)
    assert list(bounds) == sorted(set(bounds))
    assert sum(bin_counts(values, bounds)) == len(values)
    assert bin_counts(values, bounds)[-1] == 0  # nothing of stable lands above its max

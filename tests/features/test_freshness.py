"""Freshness verdicts and the three policies, over hand-made lookups."""

from __future__ import annotations

import pytest

from modelplane.features.base import Lookup
from modelplane.features.freshness import (
    FeaturesUnavailable,
    Policy,
    State,
    apply_policy,
    classify,
)

from .kit import FeatureSetBuilder

FS = (
    FeatureSetBuilder()
    .max_age(60)
    .feature("amount", default=0.0)
    .feature("country", "string", max_age_s=3600)
    .feature("score")
    .build()
)


def lookup(key: str, **aged: tuple[object, float]) -> Lookup:
    return Lookup(
        key=key,
        values={n: v for n, (v, _) in aged.items()},
        event_times={n: 1000.0 - a for n, (_, a) in aged.items()},
        ages={n: a for n, (_, a) in aged.items()},
        missing=tuple(n for n in FS.feature_names if n not in aged),
    )


FRESH = lookup("a", amount=(1.0, 10.0), country=("FR", 3000.0), score=(0.5, 60.0))
STALE = lookup("b", amount=(2.0, 61.0), country=("DE", 3601.0), score=(0.7, 1.0))
EMPTY = lookup("c")


def test_classify_uses_per_feature_overrides() -> None:
    assert [c.state for c in classify(FRESH, FS, FS.feature_names)] == [State.FRESH] * 3
    checks = classify(STALE, FS, FS.feature_names)
    assert [(c.state, c.max_age_s) for c in checks] == [
        (State.STALE, 60.0),
        (State.STALE, 3600.0),
        (State.FRESH, 60.0),
    ]
    assert {c.state for c in classify(EMPTY, FS, FS.feature_names)} == {State.MISSING}


@pytest.mark.parametrize("policy", list(Policy))
def test_all_fresh_joins_as_is(policy: Policy) -> None:
    result = apply_policy([FRESH], FS, policy)
    assert result.rows[0].values == {"amount": 1.0, "country": "FR", "score": 0.5}
    assert result.rows[0].ages == {"amount": 10.0, "country": 3000.0, "score": 60.0}
    assert (result.problems, result.use_fallback, result.rows[0].defaulted) == ((), False, ())


def test_fail_names_feature_key_and_age() -> None:
    with pytest.raises(FeaturesUnavailable) as caught:
        apply_policy([FRESH, STALE], FS, Policy.FAIL)
    assert "amount is stale for key 'b': age 61.000 s > max age 60.0 s" in str(caught.value)
    assert [d["field"] for d in caught.value.details] == ["features.amount", "features.country"]
    assert caught.value.details[0]["age_s"] == 61.0


def test_default_fills_declared_defaults_and_says_so() -> None:
    result = apply_policy([STALE], FS, Policy.DEFAULT, ["amount", "score"])
    row = result.rows[0]
    assert row.values == {"amount": 0.0, "score": 0.7}
    assert row.defaulted == ("amount",)
    assert row.ages == {"amount": 61.0, "score": 1.0}


def test_default_without_a_declared_default_fails() -> None:
    with pytest.raises(FeaturesUnavailable, match="no default declared"):
        apply_policy([EMPTY], FS, Policy.DEFAULT)


def test_fallback_marks_the_result() -> None:
    result = apply_policy([FRESH, EMPTY], FS, Policy.FALLBACK)
    assert result.use_fallback
    assert [p.state for p in result.problems] == [State.MISSING] * 3
    assert result.rows[1].values == {}
    assert result.rows[1].ages["amount"] is None


def test_unknown_features_are_refused() -> None:
    with pytest.raises(FeaturesUnavailable, match="no feature 'nope'"):
        apply_policy([FRESH], FS, Policy.FAIL, ["nope"])

"""Freshness at serve time: classify every looked-up value, then apply the endpoint's policy.

Pure: lookups and the feature set in, joined rows out. A value is ``fresh`` when its age
is at most the feature's max age (its override, else the set's SLA), ``stale`` when older,
``missing`` when the store has none. The policy says what a stale or missing value becomes:

* ``fail``: nothing is served; :class:`FeaturesUnavailable` names each feature, key and age;
* ``default``: the feature's declared default, listed in ``defaulted`` (a feature without
  one still fails, naming it);
* ``fallback``: the rows come back with ``use_fallback`` set, for the caller to answer the
  contract's fallback instead of asking the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelplane.errors import ContractViolation
from modelplane.features.base import EntityKey, Lookup
from modelplane.spec.featureset import FeatureSet

__all__ = [
    "FeaturesUnavailable",
    "JoinResult",
    "JoinedRow",
    "Policy",
    "State",
    "ValueCheck",
    "apply_policy",
    "classify",
]


class State(StrEnum):
    """How usable one looked-up value is."""

    FRESH = "fresh"
    """Present and no older than its max age."""
    STALE = "stale"
    """Present but older than its max age."""
    MISSING = "missing"
    """The store holds no value for it."""


class Policy(StrEnum):
    """What a stale or missing value becomes."""

    FAIL = "fail"
    """Refuse the request, naming each feature and its age."""
    DEFAULT = "default"
    """Use the feature's declared default and say so."""
    FALLBACK = "fallback"
    """Answer the contract's fallback instead of the model."""


class FeaturesUnavailable(ContractViolation):
    """Features were stale or missing under the ``fail`` policy (or had no default).

    Its own code (HTTP 422): the request was well formed, the data behind it was not."""

    code = "features_unavailable"


@dataclass(frozen=True, slots=True)
class ValueCheck:
    """One value's verdict; ``age_s`` is ``None`` when missing."""

    key: EntityKey
    feature: str
    state: State
    age_s: float | None
    max_age_s: float

    @property
    def problem(self) -> str:
        if self.state is State.MISSING:
            return f"missing for key {self.key!r}"
        return f"stale for key {self.key!r}: age {self.age_s:.3f} s > max age {self.max_age_s} s"


@dataclass(frozen=True, slots=True)
class JoinedRow:
    """The features of one entity as the model sees them, with each value's age."""

    key: EntityKey
    values: dict[str, Any]
    ages: dict[str, float | None]
    defaulted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JoinResult:
    """Joined rows, every stale or missing value, and whether to answer the fallback."""

    rows: tuple[JoinedRow, ...]
    problems: tuple[ValueCheck, ...] = ()
    use_fallback: bool = False


def classify(lookup: Lookup, featureset: FeatureSet, features: Sequence[str]) -> list[ValueCheck]:
    """A verdict per asked-for feature of one lookup."""
    checks = []
    for name in features:
        max_age = featureset.max_age_s(name)
        age = lookup.ages.get(name)
        if name not in lookup.values or age is None:
            state = State.MISSING
        else:
            state = State.FRESH if age <= max_age else State.STALE
        checks.append(ValueCheck(lookup.key, name, state, age, max_age))
    return checks


def apply_policy(
    lookups: Sequence[Lookup],
    featureset: FeatureSet,
    policy: Policy,
    features: Sequence[str] | None = None,
) -> JoinResult:
    """Join each lookup into a row under ``policy``; ``features`` defaults to all of them."""
    names = tuple(features) if features is not None else featureset.feature_names
    _known(featureset, names)
    rows: list[JoinedRow] = []
    problems: list[ValueCheck] = []
    for lookup in lookups:
        checks = classify(lookup, featureset, names)
        bad = [check for check in checks if check.state is not State.FRESH]
        problems += bad
        rows.append(_join(lookup, featureset, names, bad, policy))
    if problems and policy is Policy.FAIL:
        _raise(featureset, problems, "stale or missing")
    if policy is Policy.DEFAULT:
        undefaultable = [p for p in problems if _default(featureset, p.feature) is None]
        if undefaultable:
            _raise(featureset, undefaultable, "stale or missing, with no default declared")
    use_fallback = bool(problems) and policy is Policy.FALLBACK
    return JoinResult(tuple(rows), tuple(problems), use_fallback)


def _join(
    lookup: Lookup,
    featureset: FeatureSet,
    names: Sequence[str],
    bad: Sequence[ValueCheck],
    policy: Policy,
) -> JoinedRow:
    values = {name: lookup.values[name] for name in names if name in lookup.values}
    ages: dict[str, float | None] = {name: lookup.ages.get(name) for name in names}
    defaulted: list[str] = []
    for check in bad:
        values.pop(check.feature, None)
        default = _default(featureset, check.feature)
        if policy is Policy.DEFAULT and default is not None:
            values[check.feature] = default
            defaulted.append(check.feature)
    return JoinedRow(lookup.key, values, ages, tuple(defaulted))


def _default(featureset: FeatureSet, name: str) -> Any:
    feature = featureset.feature(name)
    return None if feature is None else feature.default


def _known(featureset: FeatureSet, names: Sequence[str]) -> None:
    unknown = [name for name in names if featureset.feature(name) is None]
    if unknown:
        raise FeaturesUnavailable(
            f"feature set {featureset.ref} has no feature {', '.join(map(repr, unknown))}",
            details=[{"field": f"features.{name}", "problem": "unknown"} for name in unknown],
        )


def _raise(featureset: FeatureSet, problems: Sequence[ValueCheck], what: str) -> None:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise FeaturesUnavailable(
        f"feature set {featureset.ref}: {first.feature} is {first.problem}{more}; {what}",
        details=[
            {
                "field": f"features.{p.feature}",
                "problem": p.problem,
                "key": p.key,
                "age_s": p.age_s,
                "max_age_s": p.max_age_s,
            }
            for p in problems
        ],
    )

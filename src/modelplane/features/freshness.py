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

from collections.abc import Mapping, Sequence
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
    values: Mapping[str, Any]
    ages: Mapping[str, float | None]
    defaulted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JoinResult:
    """Joined rows, every stale or missing value, and whether to answer the fallback."""

    rows: tuple[JoinedRow, ...]
    problems: tuple[ValueCheck, ...] = ()
    use_fallback: bool = False


@dataclass(frozen=True, slots=True)
class _Rules:
    """What a join needs of the feature set, looked up once per call, not once per value."""

    names: tuple[str, ...]
    name_set: frozenset[str]
    max_age: dict[str, float]
    default: dict[str, Any]
    strictest: float
    """The smallest max age: a row whose values are all younger is fresh throughout."""

    @classmethod
    def of(cls, featureset: FeatureSet, names: Sequence[str]) -> _Rules:
        """Cached per feature set object and names: an endpoint joins the same ones on every
        request."""
        key = (id(featureset), tuple(names))
        cached = _RULES.get(key)
        if cached is not None and cached[0] is featureset:
            return cached[1]
        if len(_RULES) >= _RULES_KEPT:
            _RULES.clear()
        rules = cls._build(featureset, names)
        _RULES[key] = (featureset, rules)
        return rules

    @classmethod
    def _build(cls, featureset: FeatureSet, names: Sequence[str]) -> _Rules:
        by_name = {f.name: f for f in featureset.features}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise FeaturesUnavailable(
                f"feature set {featureset.ref} has no feature {', '.join(map(repr, unknown))}",
                details=[{"field": f"features.{name}", "problem": "unknown"} for name in unknown],
            )
        sla = featureset.freshness.max_age_s
        overrides = {name: by_name[name].max_age_s for name in names}
        max_age = {name: sla if own is None else own for name, own in overrides.items()}
        default = {name: by_name[name].default for name in names}
        strictest = min(max_age.values(), default=sla)
        return cls(tuple(names), frozenset(names), max_age, default, strictest)


_RULES: dict[tuple[int, tuple[str, ...]], tuple[FeatureSet, _Rules]] = {}
_RULES_KEPT = 256


def classify(lookup: Lookup, featureset: FeatureSet, features: Sequence[str]) -> list[ValueCheck]:
    """A verdict per asked-for feature of one lookup."""
    return _classify(lookup, _Rules.of(featureset, features))


def _classify(lookup: Lookup, rules: _Rules) -> list[ValueCheck]:
    checks = []
    values, ages = lookup.values, lookup.ages
    for name in rules.names:
        max_age = rules.max_age[name]
        age = ages.get(name)
        if name not in values or age is None:
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
    rules = _Rules.of(featureset, names)
    rows: list[JoinedRow] = []
    problems: list[ValueCheck] = []
    for lookup in lookups:
        if _all_fresh(lookup, rules):  # the common case: no verdict objects at all
            values, ages = lookup.values, lookup.ages
            if len(values) != len(names):  # the store answered more than was asked
                values, ages = {n: values[n] for n in names}, {n: ages[n] for n in names}
            rows.append(JoinedRow(lookup.key, values, ages))
            continue
        bad = [check for check in _classify(lookup, rules) if check.state is not State.FRESH]
        problems += bad
        rows.append(_join(lookup, rules, bad, policy))
    if problems and policy is Policy.FAIL:
        _raise(featureset, problems, "stale or missing")
    if policy is Policy.DEFAULT:
        undefaultable = [p for p in problems if rules.default[p.feature] is None]
        if undefaultable:
            _raise(featureset, undefaultable, "stale or missing, with no default declared")
    use_fallback = bool(problems) and policy is Policy.FALLBACK
    return JoinResult(tuple(rows), tuple(problems), use_fallback)


def _all_fresh(lookup: Lookup, rules: _Rules) -> bool:
    if lookup.missing:
        return False
    values, ages = lookup.values, lookup.ages
    strictest = rules.strictest
    if len(values) == len(rules.names) == len(ages) and values.keys() == rules.name_set:
        # exactly what was asked: one C-level pass over the ages
        return max(ages.values(), default=0.0) <= strictest
    for name in rules.names:
        if name not in values:
            return False
        age = ages.get(name)
        if age is None or age > strictest:
            return False
    return True


def _join(lookup: Lookup, rules: _Rules, bad: Sequence[ValueCheck], policy: Policy) -> JoinedRow:
    names = rules.names
    values = {name: lookup.values[name] for name in names if name in lookup.values}
    ages: dict[str, float | None] = {name: lookup.ages.get(name) for name in names}
    defaulted: list[str] = []
    for check in bad:
        values.pop(check.feature, None)
        default = rules.default[check.feature]
        if policy is Policy.DEFAULT and default is not None:
            values[check.feature] = default
            defaulted.append(check.feature)
    return JoinedRow(lookup.key, values, ages, tuple(defaulted))


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

"""May a new feature set definition replace an old one, and under which version?

Readers of a feature set are models: a feature is, to them, what an output is to a
contract's callers, so the contract rules apply in that direction. Breaking: a removed
(or renamed) feature, a dtype that no longer holds every stored value (``widens`` from
:mod:`modelplane.core.compat`), a different entity. Warnings: a widened dtype (models see
values they were not trained on), a changed default, a looser freshness SLA.

A version is immutable to its readers: the same version may only take changes that break
nobody (an added feature, a new description); anything breaking needs a higher version,
which lives beside the old one in the online store.
"""

from __future__ import annotations

from modelplane.core.compat import Incompatibility, ensure_compatible, widens
from modelplane.errors import Conflict
from modelplane.spec.featureset import Feature, FeatureSet

__all__ = ["check_revision", "compare_feature_sets"]


def _compare_feature(old: Feature, new: Feature) -> list[Incompatibility]:
    path = f"features.{old.name}"
    found: list[Incompatibility] = []
    if not widens(old.dtype, new.dtype):
        problem = f"dtype {old.dtype} -> {new.dtype} does not hold every stored value"
        found.append(Incompatibility(f"{path}.dtype", problem, "outputs"))
    elif old.dtype is not new.dtype:
        problem = f"dtype widened {old.dtype} -> {new.dtype}: models see values they never saw"
        found.append(Incompatibility(f"{path}.dtype", problem, "outputs", "warning"))
    if old.default != new.default:
        problem = f"default changed from {old.default!r} to {new.default!r}"
        found.append(Incompatibility(f"{path}.default", problem, "outputs", "warning"))
    old_age, new_age = old.max_age_s, new.max_age_s
    if old_age is not None and (new_age is None or new_age > old_age):
        problem = f"max age loosened from {old_age} s to {new_age or 'the set SLA'}"
        found.append(Incompatibility(f"{path}.max_age_s", problem, "service", "warning"))
    return found


def compare_feature_sets(old: FeatureSet, new: FeatureSet) -> list[Incompatibility]:
    """Every reason ``new`` cannot replace ``old`` for models trained on ``old``."""
    found: list[Incompatibility] = []
    if old.name != new.name:
        problem = f"a different feature set: {old.name} -> {new.name}"
        found.append(Incompatibility("name", problem, "outputs"))
    if old.entity != new.entity:
        problem = (
            f"entity changed from {old.entity.name} ({old.entity.dtype})"
            f" to {new.entity.name} ({new.entity.dtype})"
        )
        found.append(Incompatibility("entity", problem, "inputs"))
    for old_feature in old.features:
        new_feature = new.feature(old_feature.name)
        if new_feature is None:
            problem = "feature was removed (or renamed)"
            found.append(Incompatibility(f"features.{old_feature.name}", problem, "outputs"))
        else:
            found += _compare_feature(old_feature, new_feature)
    if new.freshness.max_age_s > old.freshness.max_age_s:
        problem = (
            f"max age loosened from {old.freshness.max_age_s} s to {new.freshness.max_age_s} s"
        )
        found.append(Incompatibility("freshness.max_age_s", problem, "service", "warning"))
    return found


def check_revision(old: FeatureSet, new: FeatureSet) -> list[Incompatibility]:
    """Refuse ``new`` where it would change what readers of ``old``'s version rely on.

    Returns the findings (warnings included) when allowed. Raises
    :class:`~modelplane.errors.Conflict` for a version older than the stored one, and
    :class:`~modelplane.errors.Incompatible` for a breaking change under the same version.
    """
    if new.version < old.version:
        raise Conflict(
            f"feature set {new.name}: version {new.version} is older than the stored"
            f" version {old.version}",
            details=[{"field": "version", "problem": f"must be at least {old.version}"}],
        )
    findings = compare_feature_sets(old, new)
    if new.version == old.version:
        subject = f"feature set {old.ref} (publish version {old.version + 1} instead)"
        ensure_compatible(findings, subject=subject)
    return findings

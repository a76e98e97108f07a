"""Feature set evolution: what needs a new version, what the same version may take."""

from __future__ import annotations

import pytest

from modelplane.errors import Conflict, Incompatible
from modelplane.features.compat import check_revision, compare_feature_sets

from .kit import FeatureSetBuilder


def base() -> FeatureSetBuilder:
    return FeatureSetBuilder().feature("amount", "float32").feature("count", "int32", default=0)


def test_identical_and_additive_changes_are_compatible() -> None:
    old = base().build()
    assert compare_feature_sets(old, old) == []
    added = base().feature("country", "string").build()
    assert check_revision(old, added) == []


@pytest.mark.parametrize(
    ("new", "field"),
    [
        (FeatureSetBuilder().feature("amount", "float32"), "features.count"),
        (
            FeatureSetBuilder().feature("amount", "float16").feature("count", "int32", default=0),
            "features.amount.dtype",
        ),
        (
            FeatureSetBuilder().feature("amount", "float32").feature("count", "string"),
            "features.count.dtype",
        ),
        (base().entity("customer_id", "int64"), "entity"),
    ],
)
def test_breaking_changes_need_a_new_version(new: FeatureSetBuilder, field: str) -> None:
    old = base().build()
    with pytest.raises(Incompatible) as caught:
        check_revision(old, new.build())
    assert [d["field"] for d in caught.value.details] == [field]
    assert "publish version 2" in str(caught.value)
    findings = check_revision(old, new.version(2).build())
    assert [f.field for f in findings if f.breaking] == [field]


def test_widening_and_looser_sla_are_warnings() -> None:
    old = base().build()
    new = (
        FeatureSetBuilder()
        .feature("amount", "float64")
        .feature("count", "int64", default=1)
        .max_age(120)
        .build()
    )
    findings = check_revision(old, new)
    assert all(not f.breaking for f in findings)
    assert {f.field for f in findings} == {
        "features.amount.dtype",
        "features.count.dtype",
        "features.count.default",
        "freshness.max_age_s",
    }


def test_an_older_version_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        check_revision(base().version(3).build(), base().version(2).build())

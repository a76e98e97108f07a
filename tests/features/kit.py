"""A small fluent builder of feature sets for the feature tests."""

from __future__ import annotations

from typing import Any

from modelplane.spec.featureset import FeatureSet
from modelplane.spec.io import parse

__all__ = ["FeatureSetBuilder"]


class FeatureSetBuilder:
    def __init__(self, name: str = "tx", version: int = 1) -> None:
        self._data: dict[str, Any] = {
            "name": name,
            "version": version,
            "team": "risk",
            "entity": {"name": "customer_id", "dtype": "string"},
            "features": [],
            "freshness": {"max_age_s": 60.0},
        }

    def feature(self, name: str, dtype: str = "float64", **extra: Any) -> FeatureSetBuilder:
        self._data["features"].append({"name": name, "dtype": dtype, **extra})
        return self

    def entity(self, name: str, dtype: str) -> FeatureSetBuilder:
        self._data["entity"] = {"name": name, "dtype": dtype}
        return self

    def max_age(self, seconds: float) -> FeatureSetBuilder:
        self._data["freshness"] = {"max_age_s": seconds}
        return self

    def version(self, version: int) -> FeatureSetBuilder:
        self._data["version"] = version
        return self

    def data(self) -> dict[str, Any]:
        return self._data

    def build(self) -> FeatureSet:
        return parse(FeatureSet, self._data)

"""Find applied feature sets: by name, at a version or the latest."""

from __future__ import annotations

from modelplane.errors import NotFound
from modelplane.spec.featureset import FeatureSet
from modelplane.store.resources import ResourceStore

__all__ = ["resolve_feature_set"]


def resolve_feature_set(resources: ResourceStore, ref: str) -> FeatureSet:
    """``name`` (the latest version) or ``name:version``."""
    name, _, version = ref.partition(":")
    if version:
        return FeatureSet.model_validate(resources.get("FeatureSet", ref).spec)
    found = [
        FeatureSet.model_validate(r.spec)
        for r in resources.list("FeatureSet")
        if r.spec.get("name") == name
    ]
    if not found:
        raise NotFound(f"feature set '{name}' not found; apply it first")
    return max(found, key=lambda fs: fs.version)

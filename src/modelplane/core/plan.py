"""The plan of an endpoint: what the control plane resolved and the data plane serves.

The endpoint controller resolves every route (and shadow) of an ``Endpoint`` to a verified
package folder and the feature sets it binds; the gateway serves exactly that. Both sides
speak these two values, so nothing is copied field by field between the planes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelplane.spec.endpoint import Endpoint
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.manifest import Manifest
from modelplane.types import Digest

__all__ = ["EndpointPlan", "ModelSource"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A resolved model version: its package folder, manifest and digest.

    ``label`` is what responses name (``fraud:7``); ``paths`` are put first on the worker's
    ``sys.path`` (code a package imports that is not installed).
    """

    label: str
    directory: Path
    manifest: Manifest
    digest: Digest
    paths: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        """The part of ``label`` after the model name: ``7`` of ``fraud:7``."""
        return self.label.rpartition(":")[2]


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """What one endpoint should serve: its spec, the model version each route (and shadow)
    resolved to, and the feature sets it binds (by ``name:version``)."""

    endpoint: Endpoint
    models: Mapping[str, ModelSource]
    """Route model ref (as written in the spec) → the version it resolved to."""
    featuresets: Mapping[str, FeatureSet] = field(default_factory=dict)
    generation: int = 0
    """The ``Endpoint`` resource's generation this plan was made from (0: not from the
    store, e.g. ``modelplane serve``); the gateway does not read it."""

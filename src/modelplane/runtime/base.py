"""What every model runtime provides: save a model into a package, load it, predict.

Inputs and outputs are dicts of numpy arrays keyed by signature field name, with the batch
as the leading dimension. A runtime that cannot take a batch in one call says so with
``supports_batching = False``; the data plane then calls it row by row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy.typing as npt

from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = ["Arrays", "LoadedModel", "ModelRuntime", "SavedModel"]

Arrays = Mapping[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class SavedModel:
    """What :meth:`ModelRuntime.save` wrote into the package folder."""

    model_file: str
    """Path of the main model file, relative to the package folder."""
    format: ModelFormat
    entrypoint: str | None = None
    """``module:Class`` for the python runtime."""


@runtime_checkable
class LoadedModel(Protocol):
    """A model loaded in a worker process, ready to predict."""

    supports_batching: bool

    def predict(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]: ...


class ModelRuntime(Protocol):
    """One runtime (onnx, sklearn, ...): found by name through entry points."""

    name: Runtime
    packages: tuple[str, ...]
    """Distributions whose versions a package records in its environment."""

    def accepts(self, model: object) -> bool:
        """True when ``model`` (an in-memory object) is something this runtime can save."""
        ...

    def save(
        self,
        model: object,
        directory: Path,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
    ) -> SavedModel: ...

    def load(self, directory: Path, manifest: Manifest) -> LoadedModel: ...

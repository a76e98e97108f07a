"""What every model runtime provides: save a model into a package, load it, predict.

Inputs and outputs are dicts of numpy arrays keyed by signature field name, with the batch
as the leading dimension. A runtime that cannot take a batch in one call says so with
``supports_batching = False``; the data plane then calls it row by row.

Runtimes never write into a package folder on ``load``: packages are verified byte for byte,
and a stray ``__pycache__`` or lock file would break the next verification.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy.typing as npt

from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = ["Arrays", "LoadedModel", "ModelRuntime", "RuntimeOptions", "SavedModel"]

Arrays = Mapping[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How a runtime should behave inside one worker process.

    The defaults suit the deployment model of one replica per core: one compute thread per
    replica, so replicas on the same node do not fight over cores.
    """

    intra_op_threads: int = 1
    """Threads used inside one operator or prediction.

    Per session or model for onnxruntime, xgboost and lightgbm; process-wide for torch and
    for sklearn's BLAS and OpenMP pools (set when a model loads), which suits a worker
    process that serves one model.
    """
    inter_op_threads: int = 1
    """Threads running independent operators in parallel (onnxruntime; torch, process-wide)."""
    allow_python_code: bool = True
    """Whether the ``python`` runtime may import a package's ``model.py``.

    Python packages are code the owning team wrote, shipped as source inside a
    digest-verified package, so they are allowed by default; operators who host untrusted
    packages turn this off and such packages then fail with ``UnsafeFormat``.
    """

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise ValueError("thread counts must be at least 1")


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
    """One runtime (onnx, sklearn, ...): found by name through entry points.

    Constructing a runtime is cheap and imports no model library; the library is imported on
    the first ``save`` or ``load``, and a missing one raises
    :class:`~modelplane.errors.MissingExtra`.
    """

    name: Runtime
    packages: tuple[str, ...]
    """Distributions whose versions a package records in its environment (absent ones skipped)."""

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

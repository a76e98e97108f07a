"""Helpers shared by the runtime tests: data, signatures, and a save-then-load round trip."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.runtime.base import LoadedModel, ModelRuntime, SavedModel
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import Environment, Manifest, ModelFormat

__all__ = [
    "COLUMNS",
    "Package",
    "column_fields",
    "columns_of",
    "matrix_field",
    "tabular_data",
]

COLUMNS = ("f0", "f1", "f2", "f3")


def tabular_data(
    rows: int = 120, classes: int = 2, seed: int = 0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """A small, learnable classification set: 4 float features, ``classes`` labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(COLUMNS)))
    score = x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2]
    edges = np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])
    return x, np.digitize(score, edges).astype(np.int64)


def columns_of(x: npt.NDArray[Any], names: Sequence[str] = COLUMNS) -> dict[str, npt.NDArray[Any]]:
    return {name: x[:, j] for j, name in enumerate(names)}


def column_fields(
    names: Sequence[str] = COLUMNS, dtype: DType = DType.FLOAT64
) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(name=name, dtype=dtype, shape=(-1,)) for name in names)


def matrix_field(name: str, width: int, dtype: DType = DType.FLOAT64) -> tuple[FieldSpec, ...]:
    return (FieldSpec(name=name, dtype=dtype, shape=(-1, width)),)


class Package:
    """A package folder built step by step: ``Package(tmp).inputs(...).save(rt, model).load()``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._inputs: tuple[FieldSpec, ...] = column_fields()
        self._runtime: ModelRuntime | None = None
        self._saved: SavedModel | None = None
        self._trusted = False

    def inputs(self, fields: tuple[FieldSpec, ...]) -> Package:
        self._inputs = fields
        return self

    def save(
        self,
        runtime: ModelRuntime,
        model: object,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
    ) -> Package:
        self._runtime = runtime
        self._saved = runtime.save(model, self.folder, format=format, trust_pickle=trust_pickle)
        self._trusted = trust_pickle
        return self

    def written(
        self, runtime: ModelRuntime, saved: SavedModel, *, trusted: bool = False
    ) -> Package:
        """For files written by hand rather than by ``save``."""
        self._runtime, self._saved, self._trusted = runtime, saved, trusted
        return self

    @property
    def manifest(self) -> Manifest:
        assert self._runtime is not None, "save() first"
        assert self._saved is not None, "save() first"
        return Manifest(
            name="test-model",
            runtime=self._runtime.name,
            format=self._saved.format,
            model_file=self._saved.model_file,
            entrypoint=self._saved.entrypoint,
            trusted_pickle=self._trusted,
            signature=Signature(inputs=self._inputs),
            environment=Environment(python=platform.python_version()),
        )

    def load(self, runtime: ModelRuntime | None = None) -> LoadedModel:
        chosen = runtime or self._runtime
        assert chosen is not None, "save() first"
        return chosen.load(self.folder, self.manifest)

"""Infer signature fields from sample arrays, and a model's outputs by running it once.

The packager calls :func:`output_fields_for` with the in-memory model and a sample input:
the model is saved and loaded through its runtime exactly as a worker would, and predicts
on the sample, so the inferred outputs are the ones serving will produce (names follow
each runtime's convention, see :mod:`modelplane.runtime.tabular`).
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import InvalidSpec
from modelplane.runtime.base import Arrays, ModelRuntime, RuntimeOptions
from modelplane.runtime.registry import runtime_for
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import Environment, Manifest, ModelFormat

__all__ = ["dtype_of", "field_for", "fields_for", "output_fields_for"]

_PROBE_NAME = "signature-probe"


def dtype_of(array: npt.NDArray[Any]) -> DType:
    """The signature dtype of a numpy array; text and objects are ``string``."""
    kind = array.dtype.kind
    if kind in "OUS":
        return DType.STRING
    if kind == "b":
        return DType.BOOL
    try:
        return DType(array.dtype.name)
    except ValueError:
        raise InvalidSpec(f"arrays of dtype {array.dtype} have no signature dtype") from None


def field_for(name: str, array: npt.NDArray[Any]) -> FieldSpec:
    """A field for ``array``, whose first dimension is the (variable) batch."""
    array = np.asarray(array)
    if array.ndim == 0:
        raise InvalidSpec(
            f"'{name}' is a scalar; samples need a leading batch dimension",
            details=[{"field": name, "problem": "no batch dimension"}],
        )
    return FieldSpec(name=name, dtype=dtype_of(array), shape=(-1, *array.shape[1:]))


def fields_for(arrays: Arrays) -> tuple[FieldSpec, ...]:
    """One field per array, in the mapping's order."""
    return tuple(field_for(name, array) for name, array in arrays.items())


def output_fields_for(
    model: object,
    sample: Arrays,
    *,
    inputs: Sequence[FieldSpec] | None = None,
    runtime: ModelRuntime | None = None,
    format: ModelFormat | None = None,
    trust_pickle: bool = False,
) -> tuple[FieldSpec, ...]:
    """The output fields ``model`` gives when served, found by predicting on ``sample``.

    ``inputs`` defaults to :func:`fields_for` of the sample; ``runtime`` to
    :func:`~modelplane.runtime.registry.runtime_for` of the model.
    """
    chosen = runtime or runtime_for(model, RuntimeOptions())
    signature = Signature(inputs=tuple(inputs) if inputs else fields_for(sample))
    with tempfile.TemporaryDirectory(prefix="modelplane-probe-") as tmp:
        folder = Path(tmp)
        saved = chosen.save(model, folder, format=format, trust_pickle=trust_pickle)
        manifest = Manifest(
            name=_PROBE_NAME,
            runtime=chosen.name,
            format=saved.format,
            model_file=saved.model_file,
            entrypoint=saved.entrypoint,
            trusted_pickle=trust_pickle,
            signature=signature,
            environment=Environment(python=platform.python_version()),
        )
        outputs = chosen.load(folder, manifest).predict(sample)
    return fields_for(outputs)

"""The tabular convention shared by the sklearn, xgboost, lightgbm and onnx runtimes.

**Inputs.** A tabular model takes either

* several 1-D fields (shape ``[-1]``, one per column), stacked in signature order into a
  2-D matrix (or, when the model was fitted on a pandas DataFrame and pandas is importable,
  a DataFrame with those column names, in the order the model was fitted with), or
* exactly one field of shape ``[-1, n]``, passed through as the matrix.

**Outputs.** Names are a stable part of the package format, so endpoints and contracts can
rely on them:

* classifiers give ``label`` (the predicted class, shape ``[-1]``) and ``probabilities``
  (shape ``[-1, n_classes]``, columns in class order) when the model can produce them;
* regressors, rankers and anything else with ``predict`` give ``prediction``;
* the torch runtime gives ``output`` (see :mod:`modelplane.runtime.torch`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import ContractViolation, InvalidSpec
from modelplane.runtime.base import Arrays
from modelplane.spec.fields import FieldSpec

__all__ = [
    "LABEL",
    "OUTPUT",
    "PREDICTION",
    "PROBABILITIES",
    "FeatureMatrix",
    "class_outputs",
    "field_array",
    "field_arrays",
]

LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
OUTPUT = "output"

_NUMERIC_KINDS = frozenset("biuf")


def field_array(inputs: Arrays, field: FieldSpec) -> npt.NDArray[Any]:
    """The input for ``field``, cast to its dtype; a missing or uncastable one is named."""
    if field.name not in inputs:
        raise ContractViolation(
            f"missing input '{field.name}'",
            details=[{"field": f"inputs.{field.name}", "problem": "missing"}],
        )
    array = np.asarray(inputs[field.name])
    if not field.dtype.is_numeric or array.dtype == np.dtype(field.dtype.numpy):
        return array
    try:
        return array.astype(field.dtype.numpy)
    except (TypeError, ValueError) as exc:
        raise ContractViolation(
            f"input '{field.name}' is not {field.dtype.value}",
            details=[{"field": f"inputs.{field.name}", "problem": str(exc)}],
        ) from exc


def field_arrays(inputs: Arrays, fields: Sequence[FieldSpec]) -> list[npt.NDArray[Any]]:
    """Every field's input in signature order, with one batch size for all of them."""
    arrays = [field_array(inputs, field) for field in fields]
    sizes = {len(a) if a.ndim else 1 for a in arrays}
    if len(sizes) > 1:
        raise ContractViolation(
            f"inputs have different batch sizes: {sorted(sizes)}",
            details=[{"field": "inputs", "problem": "batch sizes differ"}],
        )
    return arrays


class FeatureMatrix:
    """Builds the 2-D matrix (or DataFrame, see module docs) a tabular model predicts on.

    Planned once per loaded model, so a signature that cannot fit the model fails at load
    and each call only gathers, casts and stacks.
    """

    def __init__(
        self, fields: Sequence[FieldSpec], *, feature_names: Sequence[str] | None = None
    ) -> None:
        self._names = None if feature_names is None else list(feature_names)
        self._matrix: FieldSpec | None = None
        self._columns: list[FieldSpec] = []
        if len(fields) == 1 and len(fields[0].shape) == 2:
            self._matrix = fields[0]
        elif all(len(field.shape) == 1 for field in fields):
            self._columns = _in_fitted_order(fields, self._names)
        else:
            raise InvalidSpec(
                "a tabular model takes one [-1, n] field or several [-1] columns",
                details=[{"field": "signature.inputs", "problem": "mixed or >2-D shapes"}],
            )

    def __call__(self, inputs: Arrays) -> Any:
        if self._matrix is not None:
            return self._from_matrix(self._matrix, field_array(inputs, self._matrix))
        arrays = field_arrays(inputs, self._columns)
        columns = [_column(f, a) for f, a in zip(self._columns, arrays, strict=True)]
        if self._names is not None:
            frame = _frame(dict(zip(self._names, columns, strict=True)))
            if frame is not None:
                return frame
        return _stack(columns)

    def _from_matrix(self, field: FieldSpec, matrix: npt.NDArray[Any]) -> Any:
        if matrix.ndim != 2:
            raise ContractViolation(
                f"input '{field.name}' must be 2-D, got {matrix.ndim}-D",
                details=[{"field": f"inputs.{field.name}", "problem": "expected 2-D"}],
            )
        if self._names is not None and len(self._names) == matrix.shape[1]:
            frame = _frame(dict(zip(self._names, matrix.T, strict=True)))
            if frame is not None:
                return frame
        return matrix


def class_outputs(
    probabilities: npt.NDArray[Any], classes: npt.NDArray[Any] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """``label`` and ``probabilities`` from class probabilities.

    A 1-D input is the probability of the positive class of a binary model; it becomes two
    columns ``[1 - p, p]``, as sklearn's ``predict_proba`` gives.
    """
    proba = np.asarray(probabilities)
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    index = np.argmax(proba, axis=1)
    label = classes[index] if classes is not None else index.astype(np.int64)
    return {LABEL: label, PROBABILITIES: proba}


def _column(field: FieldSpec, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.ndim == 2 and array.shape[1] == 1:
        return array.reshape(-1)
    if array.ndim != 1:
        raise ContractViolation(
            f"input '{field.name}' must be 1-D (one value per row), got shape {array.shape}",
            details=[{"field": f"inputs.{field.name}", "problem": "expected 1-D"}],
        )
    return array


def _stack(columns: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    if all(column.dtype.kind in _NUMERIC_KINDS for column in columns):
        return np.column_stack(columns)
    # Mixing strings and numbers must not turn numbers into strings, as column_stack would.
    matrix = np.empty((len(columns[0]), len(columns)), dtype=object)
    for j, column in enumerate(columns):
        matrix[:, j] = column
    return matrix


def _in_fitted_order(
    fields: Sequence[FieldSpec], feature_names: list[str] | None
) -> list[FieldSpec]:
    if feature_names is None:
        return list(fields)
    by_name = {field.name: field for field in fields}
    missing = [name for name in feature_names if name not in by_name]
    if missing:
        raise InvalidSpec(
            f"the model was fitted with features the signature lacks: {missing}",
            details=[{"field": "signature.inputs", "problem": f"missing {missing}"}],
        )
    return [by_name[name] for name in feature_names]


def _frame(columns: dict[str, npt.NDArray[Any]]) -> Any:
    # pandas is optional at serving time: without it the model gets the matrix, in the same
    # column order it was fitted with.
    pandas = _pandas()
    return None if pandas is None else pandas.DataFrame(columns, copy=False)


@functools.cache
def _pandas() -> ModuleType | None:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        return None

"""Signature inference: typed fields from a sample input, and the sample as model-ready arrays.

A sample can be a pandas DataFrame (one field per column), a numpy array (one tensor field
``input``), a dict of arrays (one field per key) or a list of dicts (records, one field per
key). Every field gets a variable leading (batch) dimension. pandas is never imported here:
a DataFrame can only reach us if the caller already imported pandas, so we look for it in
``sys.modules`` and keep pandas an optional dependency.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import InvalidSpec
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.io import load_yaml

__all__ = [
    "TENSOR_INPUT",
    "InferredInputs",
    "dtype_of",
    "infer_inputs",
    "load_signature",
]

TENSOR_INPUT = "input"
"""The field name a bare numpy array sample gets."""


@dataclass(frozen=True, slots=True)
class InferredInputs:
    """Input fields inferred from a sample, and the sample as arrays keyed by field name."""

    fields: tuple[FieldSpec, ...]
    arrays: dict[str, npt.NDArray[Any]]


def load_signature(path: str | Path) -> Signature:
    """Read a signature written as YAML (``inputs:`` and ``outputs:`` lists of fields)."""
    return load_yaml(Signature, Path(path))


def infer_inputs(sample: object) -> InferredInputs:
    """Fields and arrays for a DataFrame, array, dict of arrays or list of records."""
    if _is_dataframe(sample):
        return _from_dataframe(sample)
    if isinstance(sample, np.ndarray):
        return _from_tensor(sample)
    if isinstance(sample, Mapping):
        return _from_columns({str(k): v for k, v in sample.items()})
    if isinstance(sample, Sequence) and sample and all(isinstance(r, Mapping) for r in sample):
        return _from_records(sample)
    raise InvalidSpec(
        f"sample_input: cannot infer a signature from {type(sample).__name__}; give a pandas "
        "DataFrame, a numpy array, a dict of arrays or a list of dicts",
        details=[{"field": "sample_input", "problem": f"unsupported type {type(sample).__name__}"}],
    )


def dtype_of(array: npt.NDArray[Any], *, field: str = "(field)") -> DType:
    """The :class:`DType` of a numpy array; object arrays must hold only strings (or None)."""
    kind = array.dtype.kind
    if kind in "US":
        return DType.STRING
    if kind == "O":
        return _object_dtype(array, field)
    if kind in "biuf":
        try:
            return DType(array.dtype.name)
        except ValueError:
            pass
    raise InvalidSpec(
        f"{field}: dtype {array.dtype} is not supported; convert it to a number, bool or string",
        details=[{"field": field, "problem": f"unsupported dtype {array.dtype}"}],
    )


def _object_dtype(array: npt.NDArray[Any], field: str) -> DType:
    values = [v for v in array.ravel().tolist() if not _is_missing(v)]
    if all(isinstance(v, str | bytes) for v in values):
        return DType.STRING
    if all(isinstance(v, bool) for v in values):
        return DType.BOOL
    kinds = sorted({type(v).__name__ for v in values})
    raise InvalidSpec(
        f"{field}: an object column must hold strings, found {', '.join(kinds)}",
        details=[{"field": field, "problem": f"mixed object values: {', '.join(kinds)}"}],
    )


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    # pandas.NA and NaT are neither None nor float; they compare unequal to themselves
    return type(value).__name__ in ("NAType", "NaTType")


def _has_missing(array: npt.NDArray[Any]) -> bool:
    if array.dtype.kind == "f":
        return bool(np.isnan(array).any())
    if array.dtype.kind == "O":
        return any(_is_missing(v) for v in array.ravel().tolist())
    return False


def _as_batch(name: str, value: Any, side: str) -> npt.NDArray[Any]:
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] == 0:
        field = f"{side}.{name}"
        raise InvalidSpec(
            f"{field}: a sample needs a leading batch dimension with at least one row, "
            f"got shape {list(array.shape)}",
            details=[{"field": field, "problem": f"shape {list(array.shape)}"}],
        )
    return array


@dataclass(frozen=True, slots=True)
class _Column:
    """A column whose declared dtype differs from its array's (pandas Int64 with NA)."""

    array: npt.NDArray[Any]
    dtype: DType
    nullable: bool


def _field(name: str, array: npt.NDArray[Any], side: str) -> FieldSpec:
    dtype = dtype_of(array, field=f"{side}.{name}")
    shape = (-1, *(int(d) for d in array.shape[1:]))
    return FieldSpec(name=name, dtype=dtype, shape=shape, nullable=_has_missing(array))


def _model_array(array: npt.NDArray[Any], dtype: DType) -> npt.NDArray[Any]:
    """Strings travel as object arrays (see ``DType.numpy``); everything else as is."""
    if dtype is DType.STRING and array.dtype.kind != "O":
        return array.astype(object)
    return array


def _from_tensor(sample: npt.NDArray[Any]) -> InferredInputs:
    return _from_columns({TENSOR_INPUT: sample})


def _from_columns(columns: Mapping[str, Any]) -> InferredInputs:
    if not columns:
        raise InvalidSpec(
            "sample_input: an empty dict has no fields",
            details=[{"field": "sample_input", "problem": "no keys"}],
        )
    fields: list[FieldSpec] = []
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, value in columns.items():
        if isinstance(value, _Column):
            array = _as_batch(name, value.array, "inputs")
            field = FieldSpec(name=name, dtype=value.dtype, nullable=value.nullable)
        else:
            array = _as_batch(name, value, "inputs")
            field = _field(name, array, "inputs")
        fields.append(field)
        arrays[name] = _model_array(array, field.dtype)
    return InferredInputs(fields=tuple(fields), arrays=arrays)


def _from_records(records: Sequence[Mapping[str, Any]]) -> InferredInputs:
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(str(k) for k in record))
    columns = {name: _record_column(name, [r.get(name) for r in records]) for name in names}
    return _from_columns(columns)


def _record_column(name: str, values: list[Any]) -> npt.NDArray[Any] | _Column:
    present = [v for v in values if not _is_missing(v)]
    if not present:
        raise InvalidSpec(
            f"inputs.{name}: every sample value is missing; the dtype cannot be inferred",
            details=[{"field": f"inputs.{name}", "problem": "all values missing"}],
        )
    gaps = len(present) != len(values)
    if all(isinstance(v, str | bool) for v in present):
        return np.array(values, dtype=object) if gaps else np.asarray(values)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        ints = all(isinstance(v, int) for v in present)
        if not gaps:
            return np.asarray(values, dtype=np.int64 if ints else np.float64)
        # numbers with gaps reach the model as float64 with NaN, as pandas would give them
        array = np.array([math.nan if _is_missing(v) else v for v in values], dtype=np.float64)
        return _Column(array=array, dtype=DType.INT64 if ints else DType.FLOAT64, nullable=True)
    if gaps:
        return np.array(values, dtype=object)
    return np.asarray(values)


def _is_dataframe(sample: object) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(sample, pandas.DataFrame)


def _from_dataframe(frame: Any) -> InferredInputs:
    if len(frame) == 0:
        raise InvalidSpec(
            "sample_input: the DataFrame has no rows",
            details=[{"field": "sample_input", "problem": "no rows"}],
        )
    return _from_columns({str(name): _dataframe_column(frame[name]) for name in frame.columns})


def _dataframe_column(series: Any) -> npt.NDArray[Any] | _Column:
    """numpy view of one column, unwrapping pandas extension dtypes (Int64, string, category)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        return np.asarray(series.to_numpy())
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if not isinstance(numpy_dtype, np.dtype):
        # strings (pandas 3's default "str"), categories: plain Python values, None for NA
        return np.asarray(series.to_numpy(dtype=object, na_value=None), dtype=object)
    if not series.isna().any():
        return np.asarray(series.to_numpy(dtype=numpy_dtype))
    declared = DType(numpy_dtype.name)
    if numpy_dtype.kind in "iuf":
        # masked numbers with NA: the model gets float64 with NaN, as pandas itself would give
        array = np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    else:
        array = np.asarray(series.to_numpy(dtype=object, na_value=None), dtype=object)
    return _Column(array=array, dtype=declared, nullable=True)

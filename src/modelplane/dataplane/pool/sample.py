"""Sample inputs built from a signature, for the warmup prediction that makes a replica ready."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Signature

__all__ = ["sample_inputs"]


def sample_inputs(signature: Signature, rows: int = 1) -> dict[str, npt.NDArray[Any]]:
    """One valid-looking array per input: ``rows`` rows, variable dimensions set to 1.

    Values respect the field's enum (its first value) and range (its lower bound, or upper
    when only that is set), so a model that checks its inputs still accepts the warmup.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    return {f.name: _sample(f, rows) for f in signature.inputs}


def _sample(spec: FieldSpec, rows: int) -> npt.NDArray[Any]:
    shape = (rows, *(1 if d == -1 else d for d in spec.shape[1:]))
    value = _value(spec)
    if spec.dtype is DType.STRING:
        array = np.empty(shape, dtype=object)
        array.fill(value)
        return array
    return np.full(shape, value, dtype=np.dtype(spec.dtype.numpy))


def _value(spec: FieldSpec) -> Any:
    if spec.enum:
        return spec.enum[0]
    if spec.dtype is DType.STRING:
        return ""
    if spec.dtype is DType.BOOL:
        return False
    low = spec.range.min if spec.range is not None else None
    high = spec.range.max if spec.range is not None else None
    if spec.dtype.is_float:
        return low if low is not None else high if high is not None and high < 0 else 0.0
    # integers: the smallest whole number inside the range, or zero when zero is inside
    if low is not None and low > 0:
        return math.ceil(low)
    if high is not None and high < 0:
        return math.floor(high)
    return max(0, math.ceil(low)) if low is not None else 0

"""A conservative fast path for edge validation of plain numeric requests.

:class:`~modelplane.core.validate.CompiledContract` checks every rule and names every bad
field; on a one-row request most of its cost is numpy reductions whose answers only matter
for rules the contract may not have. When every input field is *plain* (numeric or bool,
required, no default, no enum, no range), a request whose arrays already have the contract's
exact dtypes and shapes can only break the contract with a NaN in a float field. This check
accepts exactly such requests with one reduction per float field (a sum is NaN when any
element is, and for a few other inputs such as ``inf - inf``); anything else, including any
false alarm, goes to the full validation, which gives the answer and the error messages.

So the fast path never accepts what the full validation would reject, and whatever it cannot
decide cheaply costs one extra set of comparisons before the full validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec

__all__ = ["PlainInputs"]

Array = npt.NDArray[Any]
_add = np.add.reduce


class PlainInputs:
    """Accepts requests that certainly keep a plain contract; see the module docstring."""

    __slots__ = ("_count", "_fields")

    def __init__(
        self, fields: Sequence[tuple[str, np.dtype[Any], int, tuple[tuple[int, int], ...], bool]]
    ):
        self._fields = tuple(fields)
        self._count = len(self._fields)

    @classmethod
    def build(cls, specs: Sequence[FieldSpec]) -> PlainInputs | None:
        """The fast path for these fields, or None when some field is not plain."""
        fields = []
        for spec in specs:
            plain = (
                spec.dtype is not DType.STRING
                and spec.required
                and spec.default is None
                and spec.enum is None
                and spec.range is None
                and len(spec.shape) >= 1
            )
            if not plain:
                return None
            dtype = np.dtype(spec.dtype.numpy)
            fixed = tuple((axis, size) for axis, size in enumerate(spec.shape) if axis and size > 0)
            fields.append((spec.name, dtype, len(spec.shape), fixed, dtype.kind == "f"))
        return cls(fields)

    def accept(self, inputs: Mapping[str, Array]) -> dict[str, Array] | None:
        """The inputs in contract order when they certainly keep the contract, else None."""
        if len(inputs) != self._count:
            return None
        out: dict[str, Array] = {}
        rows = -1
        for name, dtype, rank, fixed, is_float in self._fields:
            array = inputs.get(name)
            if (
                type(array) is not np.ndarray
                or array.dtype != dtype
                or array.ndim != rank
                or (rows != -1 and array.shape[0] != rows)
            ):
                return None
            shape = array.shape
            for axis, size in fixed:
                if shape[axis] != size:
                    return None
            if is_float and array.size and math.isnan(_add(array, axis=None)):
                return None
            rows = shape[0]
            out[name] = array
        return out

"""Edge validation: does a request (or a model's answer) keep the endpoint's contract?

This runs on every request of the data plane, so the work is split in two: a
:class:`CompiledContract` is built once per contract and holds each field's checks ready
(numpy target dtype, fixed dims, bounds, enum array); a request then costs a few numpy
reductions per field, never a Python loop over numeric elements. Object arrays (JSON with
nulls, strings) are the exception: their elements must be looked at one by one to tell a
``None`` from a number from a string.

Rules, per field (``field`` in a :class:`Violation` is the field's name):

* a required field (required and no default) must be present; unknown fields are rejected,
  since an extra field is a caller bug that would otherwise pass silently;
* the array must be castable to the contract dtype by value: numbers for numeric fields
  (floats only with integral values for integer fields, and every value within the
  target's bounds), bools for bool fields, text for string fields;
* the rank must match and every fixed dim beyond the first must match; the leading dim is
  the batch and is variable, but must be the same for every field of one request;
* nulls (``NaN`` in floats, ``None`` or ``NaN`` in object arrays) only in nullable fields;
* enum and range, on non-null values, reporting the count and the first offender's index.

Nullable integer or bool fields that hold nulls are coerced to object arrays with ``None``
at the null positions, because numpy integers cannot hold a null.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import ContractViolation, InvalidSpec
from modelplane.spec.contract import Contract
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec

__all__ = [
    "CompiledContract",
    "Violation",
    "coerce_inputs",
    "validate_inputs",
    "validate_outputs",
]

Array = npt.NDArray[Any]

_NUMBER_TYPES = (int, float, np.integer, np.floating, np.bool_)
_BOOL_TYPES = (bool, np.bool_)
_TEXT_TYPES = (str, bytes)
# Which numpy kinds each contract dtype family accepts before looking at values.
_NUMERIC_KINDS = "biuf"


@dataclass(frozen=True, slots=True)
class Violation:
    """One way a request or an answer broke the contract."""

    field: str
    problem: str

    def to_detail(self) -> dict[str, str]:
        """The ``{"field", "problem"}`` entry of a ContractViolation's details."""
        return {"field": self.field, "problem": self.problem}


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A field's array in checkable form: numeric (kinds ``biuf``) or text.

    ``nulls`` is None when there are none; ``low``/``high`` are over non-null values and
    None when there are no such values or the field is text.
    """

    values: Array
    nulls: npt.NDArray[np.bool_] | None
    low: Any = None
    high: Any = None


def _index_of_first(mask: npt.NDArray[np.bool_]) -> str:
    flat = int(np.argmax(mask))
    if mask.ndim <= 1:
        return str(flat)
    return str(tuple(int(i) for i in np.unravel_index(flat, mask.shape)))


def _first_bad(values: Array, bad: npt.NDArray[np.bool_], what: str) -> str:
    """``"<count> value(s) <what>; first <value> at index <i>"``, for a non-empty ``bad``."""
    position = int(np.argmax(bad))
    first = values.reshape(-1)[position]
    value = first.item() if isinstance(first, np.generic) else first
    return f"{int(bad.sum())} value(s) {what}; first {value!r} at index {_index_of_first(bad)}"


def _got(array: Array) -> str:
    if array.dtype.kind in "US":
        return "string"
    return "object" if array.dtype.kind == "O" else str(array.dtype)


def _type_limits(target: np.dtype[Any]) -> tuple[float, float] | None:
    """``[low, high)``: finite values outside do not fit ``target``; None when all do.

    The upper limit is exclusive so that it is exact even as a float: ``2**63`` does not fit
    int64, yet ``float(2**63 - 1) == 2**63``.
    """
    if target.kind in "iu":
        info = np.iinfo(target)
        return int(info.min), int(info.max) + 1
    if target.kind == "f" and target.itemsize < 8:
        limit = float(np.finfo(target).max)
        return -limit, float(np.nextafter(limit, np.inf))
    return None


@dataclass(frozen=True, slots=True)
class _FieldCheck:
    """Everything about one field that can be decided before any request arrives."""

    spec: FieldSpec
    name: str
    text: bool
    batched: bool
    target: np.dtype[Any]
    fixed: tuple[tuple[int, int], ...]
    optional: bool
    enum: Array | None
    text_enum: frozenset[object]
    limits: tuple[float, float] | None

    @classmethod
    def build(cls, spec: FieldSpec) -> _FieldCheck:
        target = np.dtype(spec.dtype.numpy)
        text = spec.dtype is DType.STRING
        # The leading dim is the batch: variable whatever the spec says.
        fixed = tuple((axis, size) for axis, size in enumerate(spec.shape) if axis and size > 0)
        optional = not spec.required or spec.default is not None
        enum: Array | None = None
        allowed: list[Any] = []
        if spec.enum is not None:
            # A value of the wrong kind can never match, and would make numpy compare
            # numbers with strings.
            allowed = [v for v in spec.enum if isinstance(v, _TEXT_TYPES) == text]
            enum = np.array(allowed, dtype=object if text else None)
        # BYTES tensors arrive as bytes: an enum of text admits their UTF-8 spelling too.
        text_enum = frozenset(
            [*allowed, *(v.encode() for v in allowed if isinstance(v, str))] if text else ()
        )
        return cls(
            spec=spec,
            name=spec.name,
            text=text,
            batched=bool(spec.shape),
            target=target,
            fixed=fixed,
            optional=optional,
            enum=enum,
            text_enum=text_enum,
            limits=_type_limits(target),
        )

    def run(self, array: Array) -> tuple[list[str], _Prepared | None]:
        """Every problem of ``array`` for this field, and the array ready to cast."""
        problems = self._shape(array)
        prepared = self._prepare(array)
        if isinstance(prepared, str):
            return [*problems, prepared], None
        problems += self._nulls(prepared)
        if self.text:
            problems += self._text_enum(prepared)
        else:
            problems += self._numbers(prepared, array.dtype)
        return problems, prepared

    def _shape(self, array: Array) -> list[str]:
        rank = len(self.spec.shape)
        if array.ndim != rank or any(array.shape[axis] != size for axis, size in self.fixed):
            expected = list(self.spec.shape)
            return [f"expected shape {expected} (rank {rank}), got {list(array.shape)}"]
        return []

    def _prepare(self, array: Array) -> _Prepared | str:
        kind = array.dtype.kind
        dtype = self.spec.dtype
        if kind == "O":
            return self._from_objects(array)
        if self.text:
            return _Prepared(array, None) if kind in "US" else f"expected string, got {_got(array)}"
        accepted = "b" if dtype is DType.BOOL else _NUMERIC_KINDS
        if kind not in accepted:
            return f"expected {dtype}, got {_got(array)}"
        return _numeric_stats(array, None)

    def _from_objects(self, array: Array) -> _Prepared | str:
        allowed: tuple[type, ...] = _NUMBER_TYPES
        if self.text:
            allowed = _TEXT_TYPES
        elif self.spec.dtype is DType.BOOL:
            allowed = _BOOL_TYPES
        flat = array.reshape(-1)
        nulls = np.zeros(flat.size, dtype=np.bool_)
        # Object arrays have no vectorised type test: one pass, stopping at the first stranger.
        for i, value in enumerate(flat):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                nulls[i] = True
            elif not isinstance(value, allowed):
                kind = type(value).__name__
                return f"expected {self.spec.dtype}, got {kind} {value!r} at index {i}"
        mask = nulls.reshape(array.shape) if nulls.any() else None
        if self.text:
            return _Prepared(array, mask)
        present = np.array(flat[~nulls].tolist())
        if present.dtype.kind == "O":
            return f"a value is out of bounds of every numeric dtype, let alone {self.spec.dtype}"
        values = np.zeros(flat.size, dtype=present.dtype if present.size else np.float64)
        values[~nulls] = present
        return _numeric_stats(values.reshape(array.shape), mask)

    def _nulls(self, prepared: _Prepared) -> list[str]:
        nulls = prepared.nulls
        if nulls is None or self.spec.nullable:
            return []
        count, first = int(nulls.sum()), _index_of_first(nulls)
        return [f"{count} null value(s) in a non-nullable field; first at index {first}"]

    def _numbers(self, prepared: _Prepared, source: np.dtype[Any]) -> list[str]:
        low, high, values = prepared.low, prepared.high, prepared.values
        if low is None:
            return []
        problems: list[str] = []
        if self.target.kind in "iu" and values.dtype.kind == "f":
            fractional = (np.trunc(values) != values) & np.isfinite(values)
            problems += _report(prepared, fractional, f"not integral for {self.target}")
        limits = self.limits
        # Only a narrowing float cast can overflow; same-or-wider floats always fit.
        if (
            self.target.kind == "f"
            and source.kind == "f"
            and source.itemsize <= self.target.itemsize
        ):
            limits = None
        if limits is not None and (low < limits[0] or high >= limits[1]):
            outside = (values < limits[0]) | (values >= limits[1])
            if self.target.kind == "f":
                outside &= np.isfinite(values)
            problems += _report(prepared, outside, f"out of bounds of {self.target}")
        bounds = self.spec.range
        if bounds is not None:
            least = -np.inf if bounds.min is None else bounds.min
            most = np.inf if bounds.max is None else bounds.max
            if low < least or high > most:
                outside = (values < least) | (values > most)
                problems += _report(
                    prepared, outside, f"outside range [{bounds.min}, {bounds.max}]"
                )
        if self.enum is not None:
            problems += _report(prepared, ~_member(values, self.enum), self._not_in_enum)
        return problems

    @property
    def _not_in_enum(self) -> str:
        return f"not in enum {list(self.spec.enum or ())}"

    def _text_enum(self, prepared: _Prepared) -> list[str]:
        if self.enum is None:
            return []
        values = prepared.values
        allowed = self.text_enum
        inside = np.fromiter((v in allowed for v in values.reshape(-1)), np.bool_, values.size)
        return _report(prepared, ~inside.reshape(values.shape), self._not_in_enum)

    def cast(self, prepared: _Prepared) -> Array:
        """The prepared array in the contract's dtype; call only when ``run`` found nothing."""
        values, nulls = prepared.values, prepared.nulls
        if self.text:
            return values.astype(object, copy=False)
        if nulls is None:
            return values.astype(self.target, copy=False)
        if self.target.kind == "f":
            out = values.astype(self.target)
            out[nulls] = np.nan
            return out
        out = np.where(nulls, 0, values).astype(self.target).astype(object)
        out[nulls] = None
        return out

    def default_for(self, batch: int) -> Array:
        """The default, broadcast to ``batch`` rows."""
        value = np.asarray(self.spec.default, dtype=self.target)
        rank = len(self.spec.shape)
        if rank == 0:
            return value
        tail = (
            value.shape if value.ndim == rank - 1 else tuple(max(d, 1) for d in self.spec.shape[1:])
        )
        return np.full((batch, *tail), value, dtype=self.target)


def _report(prepared: _Prepared, bad: npt.NDArray[np.bool_], what: str) -> list[str]:
    """One problem naming the count and first of the non-null ``bad`` values, if any."""
    if prepared.nulls is not None:
        bad &= ~prepared.nulls
    if not bad.any():
        return []
    return [_first_bad(prepared.values, bad, what)]


def _member(values: Array, allowed: Array) -> npt.NDArray[np.bool_]:
    """``np.isin`` for numbers; a broadcast comparison when the enum is short, since
    ``np.isin`` sorts and costs tens of microseconds even on a one-row request."""
    if allowed.size <= 16:
        return np.asarray((values[..., np.newaxis] == allowed).any(axis=-1))
    return np.isin(values, allowed)


def _numeric_stats(values: Array, nulls: npt.NDArray[np.bool_] | None) -> _Prepared:
    """Min and max of the non-null values: two reductions on the common path."""
    if values.size == 0:
        return _Prepared(values, nulls)
    if nulls is None:
        low = values.min()
        # NaN is the only value unequal to itself: a scalar test, cheaper than np.isnan.
        if low != low:  # noqa: PLR0124
            nulls = np.isnan(values)
        else:
            return _Prepared(values, None, low, values.max())
    present = values[~nulls]
    if present.size == 0:
        return _Prepared(values, nulls)
    return _Prepared(values, nulls, present.min(), present.max())


class CompiledContract:
    """A contract's checks, prepared once; ``validate`` and ``coerce`` run per request."""

    __slots__ = ("_by_name", "_inputs", "_outputs", "name")

    def __init__(
        self, inputs: Sequence[FieldSpec], outputs: Sequence[FieldSpec] = (), *, name: str = ""
    ) -> None:
        self.name = name
        self._inputs = tuple(_FieldCheck.build(spec) for spec in inputs)
        self._outputs = tuple(_FieldCheck.build(spec) for spec in outputs)
        self._by_name = {check.name: check for check in self._inputs}
        _check_defaults(self._inputs)

    @classmethod
    def from_contract(cls, contract: Contract) -> CompiledContract:
        return cls(contract.inputs, contract.outputs, name=contract.name)

    def validate(self, inputs: Mapping[str, Array]) -> list[Violation]:
        """Every violation of the request, naming each bad field; empty when it is good."""
        return self._check_inputs(inputs)[1]

    def coerce(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """The request cast to the contract dtypes, defaults filled, in contract order.

        Raises :class:`~modelplane.errors.ContractViolation` naming every bad field. Optional
        fields that are missing and have no default stay missing.
        """
        prepared, violations, batch = self._check_inputs(inputs)
        if violations:
            subject = f"contract {self.name!r}" if self.name else "the contract"
            message = f"request breaks {subject}: {len(violations)} violation(s)"
            raise ContractViolation(message, details=[v.to_detail() for v in violations])
        out: dict[str, Array] = {}
        for check in self._inputs:
            ready = prepared.get(check.name)
            if ready is not None:
                out[check.name] = check.cast(ready)
            elif check.spec.default is not None:
                out[check.name] = check.default_for(1 if batch is None else batch)
        return out

    def validate_outputs(
        self, outputs: Mapping[str, Array], *, batch_size: int | None = None
    ) -> list[Violation]:
        """Violations of a model's answer; extra outputs are ignored, not returned to callers.

        ``batch_size`` is the request's: every output's leading dim must equal it.
        """
        violations: list[Violation] = []
        for check in self._outputs:
            array = outputs.get(check.name)
            if array is None:
                if check.spec.required:
                    violations.append(Violation(check.name, "missing output"))
                continue
            array = _as_array(array)
            problems, _ = check.run(array)
            if batch_size is not None and array.ndim and array.shape[0] != batch_size:
                problems.append(
                    f"batch size {array.shape[0]} differs from the request's {batch_size}"
                )
            violations += [Violation(check.name, p) for p in problems]
        return violations

    def _check_inputs(
        self, inputs: Mapping[str, Array]
    ) -> tuple[dict[str, _Prepared], list[Violation], int | None]:
        """Prepared arrays, violations, and the request's batch size (None: no batched field)."""
        prepared: dict[str, _Prepared] = {}
        violations: list[Violation] = []
        leading: dict[str, int] = {}
        for check in self._inputs:
            given = inputs.get(check.name)
            if given is None:
                if not check.optional:
                    violations.append(Violation(check.name, "missing required field"))
                continue
            array = _as_array(given)
            if check.batched and array.ndim:
                leading[check.name] = array.shape[0]
            problems, ready = check.run(array)
            if problems:
                violations += [Violation(check.name, p) for p in problems]
            if ready is not None:
                prepared[check.name] = ready
        if len(inputs) > len(prepared) and (extra := inputs.keys() - self._by_name.keys()):
            unknown = "unknown field: the contract does not declare it"
            violations += [Violation(name, unknown) for name in inputs if name in extra]
        batch, odd = _batch_of(leading)
        violations += odd
        return prepared, violations, batch


def _as_array(value: Any) -> Array:
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def _batch_of(leading: dict[str, int]) -> tuple[int | None, list[Violation]]:
    """The request's batch size and a violation for each field whose leading dim differs."""
    sizes = set(leading.values())
    if len(sizes) <= 1:
        return next(iter(sizes), None), []
    # The size most fields agree on is taken as the batch, so the odd ones out are named.
    batch = Counter(leading.values()).most_common(1)[0][0]
    odd = [
        Violation(name, f"batch size {size} differs from {batch} of the other fields")
        for name, size in leading.items()
        if size != batch
    ]
    return batch, odd


def _check_defaults(checks: Sequence[_FieldCheck]) -> None:
    problems: list[dict[str, str]] = []
    for check in checks:
        if check.spec.default is None:
            continue
        try:
            check.default_for(1)
        except (TypeError, ValueError) as exc:
            problems.append({"field": f"inputs.{check.name}.default", "problem": str(exc)})
    if problems:
        raise InvalidSpec("a default does not fit its field", details=problems)


def validate_inputs(
    contract_fields: Sequence[FieldSpec], inputs: Mapping[str, Array]
) -> list[Violation]:
    """Every violation of ``inputs``; compiles the fields each call, so hot paths should
    hold a :class:`CompiledContract` instead."""
    return CompiledContract(contract_fields).validate(inputs)


def coerce_inputs(
    contract_fields: Sequence[FieldSpec], inputs: Mapping[str, Array]
) -> dict[str, Array]:
    """``inputs`` cast to the contract dtypes with defaults filled; raises ContractViolation."""
    return CompiledContract(contract_fields).coerce(inputs)


def validate_outputs(
    fields: Sequence[FieldSpec], outputs: Mapping[str, Array], *, batch_size: int | None = None
) -> list[Violation]:
    """Every violation of a model's ``outputs``; ``batch_size`` is the request's."""
    return CompiledContract((), fields).validate_outputs(outputs, batch_size=batch_size)

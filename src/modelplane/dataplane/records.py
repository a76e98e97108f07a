"""Records JSON: ``{"instances": [{field: value, ...}, ...]}`` in, ``{"predictions": ...}`` out.

A :class:`RecordsCodec` is built once per contract: it compiles the contract's fields into a
msgspec struct, so decoding validates every element's type (and integer bounds) in C, names
the bad row and field, and leaves Python only the transpose from rows to columns.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from modelplane.dataplane.codec_v2 import element_type
from modelplane.errors import InvalidSpec, MalformedRequest
from modelplane.spec.fields import FieldSpec

__all__ = ["RecordsCodec", "encode_predictions"]

Array = npt.NDArray[Any]


class _Predictions(msgspec.Struct, omit_defaults=True):
    predictions: list[Any]
    model_version: str | None = None
    request_id: str | None = None


_ENCODER = msgspec.json.Encoder()


def _field_type(spec: FieldSpec) -> Any:
    typ: Any = element_type(spec.dtype.v2)
    # a column is shape [-1]; each further dimension nests one list inside a row's value
    for _ in spec.shape[1:]:
        typ = list[typ]
    if spec.nullable:
        typ = typ | None
    return typ


def _field_default(spec: FieldSpec) -> Any:
    if spec.required:
        return msgspec.NODEFAULT
    if isinstance(spec.default, (list, dict)):
        value = spec.default
        return msgspec.field(default_factory=lambda: type(value)(value))
    return spec.default


class RecordsCodec:
    """Decodes records requests for one contract's input fields, in field order."""

    def __init__(self, fields: Sequence[FieldSpec]) -> None:
        if not fields:
            raise ValueError("a records codec needs at least one field")
        self.fields = tuple(fields)
        attrs = [f"f{i}" for i in range(len(self.fields))]
        row = msgspec.defstruct(
            "Row",
            [
                (a, _field_type(f), _field_default(f))
                for a, f in zip(attrs, self.fields, strict=True)
            ],
            rename=dict(zip(attrs, (f.name for f in self.fields), strict=True)),
            forbid_unknown_fields=True,
        )
        body = msgspec.defstruct(
            "Instances",
            [("instances", Annotated[list[row], msgspec.Meta(min_length=1)])],  # type: ignore[valid-type]
        )
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(body)
        getter = operator.attrgetter(*attrs)
        self._row_values: Callable[[Any], tuple[Any, ...]] = (
            getter if len(attrs) > 1 else lambda r: (getter(r),)
        )

    def decode(self, body: bytes) -> dict[str, Array]:
        """Columns keyed by field name, one row per instance, typed by the fields' dtypes."""
        try:
            rows = self._decoder.decode(body).instances
        except msgspec.ValidationError as exc:
            raise InvalidSpec(
                f"invalid records request: {exc}",
                details=[{"field": _path(exc), "problem": str(exc)}],
            ) from None
        except msgspec.DecodeError as exc:
            raise MalformedRequest(
                f"the request body is not valid JSON: {exc}",
                details=[{"field": "body", "problem": str(exc)}],
            ) from None
        columns = zip(*map(self._row_values, rows), strict=True)
        problems: list[dict[str, str]] = []
        out: dict[str, Array] = {}
        for spec, column in zip(self.fields, columns, strict=True):
            try:
                out[spec.name] = _column(spec, column)
            except ValueError as exc:
                problems.append({"field": spec.name, "problem": str(exc)})
        if problems:
            listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
            raise InvalidSpec(f"invalid records request: {listed}", details=problems)
        return out


def _path(exc: Exception) -> str:
    """``instances[3].amount`` from msgspec's ``... - at `$.instances[3]` `` message."""
    problem, sep, path = str(exc).rpartition(" - at `")
    if not sep:
        return "body"
    path = path.rstrip("`").removeprefix("$.")
    if "field `" in problem:
        path += "." + problem.split("field `", 1)[1].split("`", 1)[0]
    return path


def _column(spec: FieldSpec, values: tuple[Any, ...]) -> Array:
    dtype = np.dtype(spec.dtype.numpy)
    try:
        array = np.array(values, dtype=dtype)
    except (TypeError, ValueError):
        if not spec.nullable:
            raise ValueError("values do not form a rectangular column") from None
        # nulls in an integer, boolean or text column: keep them for contract validation
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    want = spec.shape[1:]
    got = array.shape[1:]
    if len(got) != len(want) or any(w not in (-1, g) for w, g in zip(want, got, strict=True)):
        raise ValueError(f"rows have shape {list(got)}, the field declares {list(want)}")
    return array


def encode_predictions(
    outputs: Mapping[str, Array],
    *,
    model_version: str | None = None,
    request_id: str | None = None,
) -> bytes:
    """``{"predictions": [...], "model_version", "request_id"}``.

    One output gives one value per row; several give one object per row keyed by name.
    """
    columns = {name: _json_values(array) for name, array in outputs.items()}
    if len(columns) == 1:
        (predictions,) = columns.values()
    else:
        names = list(columns)
        predictions = [
            dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)
        ]
    return _ENCODER.encode(
        _Predictions(predictions=predictions, model_version=model_version, request_id=request_id)
    )


def _json_values(array: Array) -> list[Any]:
    values: list[Any] = array.tolist()
    if array.dtype.kind in "OS":
        return _text(values)
    return values


def _text(values: list[Any]) -> list[Any]:
    return [
        _text(v)
        if isinstance(v, list)
        else v.decode("utf-8", "replace")
        if isinstance(v, bytes)
        else v
        for v in values
    ]

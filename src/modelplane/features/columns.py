"""Arrow columns checked against feature dtypes, vectorised, and turned into Python values."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from modelplane.errors import InvalidSpec
from modelplane.spec.dtypes import DType
from modelplane.spec.featureset import FeatureSet

__all__ = ["arrow_type", "check_column", "checked_rows", "event_seconds"]

_FLOAT_MAX = {DType.FLOAT16: 65504.0, DType.FLOAT32: 3.4028234663852886e38}


def arrow_type(dtype: DType) -> pa.DataType:
    """The Arrow type values of ``dtype`` are read as (floats always as float64: exact)."""
    if dtype is DType.STRING:
        return pa.string()
    if dtype.is_float:
        return pa.float64()
    return pa.type_for_alias(dtype.value)


def _kind_fits(source: pa.DataType, dtype: DType) -> bool:
    if dtype is DType.STRING:
        return bool(pa.types.is_string(source) or pa.types.is_large_string(source))
    if dtype is DType.BOOL:
        return bool(pa.types.is_boolean(source))
    if dtype.is_integer:
        return bool(pa.types.is_integer(source))
    return bool(pa.types.is_integer(source) or pa.types.is_floating(source))


def _bad(name: str, where: str, problem: str) -> InvalidSpec:
    return InvalidSpec(
        f"column {name!r} ({where}): {problem}", details=[{"field": name, "problem": problem}]
    )


def check_column(
    column: pa.ChunkedArray, dtype: DType, name: str, where: str, *, nulls: bool = True
) -> list[Any]:
    """The column's values as Python values of ``dtype``; nulls and NaN become ``None``."""
    if not _kind_fits(column.type, dtype):
        raise _bad(name, where, f"{column.type} values are not {dtype}")
    try:
        cast = column.cast(arrow_type(dtype), safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _bad(name, where, f"not {dtype}: {exc}") from exc
    if dtype.is_float:
        cast = pc.if_else(pc.is_nan(cast), pa.scalar(None, pa.float64()), cast)
        if pc.any(pc.is_inf(cast)).as_py():
            raise _bad(name, where, "infinite values")
        biggest = pc.max(pc.abs(cast)).as_py()
        if dtype in _FLOAT_MAX and biggest is not None and biggest > _FLOAT_MAX[dtype]:
            raise _bad(name, where, f"{biggest} is out of range for {dtype}")
    if not nulls and cast.null_count:
        raise _bad(name, where, f"{cast.null_count} null value(s)")
    values: list[Any] = cast.to_pylist()
    return values


def event_seconds(column: pa.ChunkedArray, name: str, where: str) -> list[float]:
    """Event times as float seconds since the epoch, from numbers or Arrow timestamps."""
    if pa.types.is_timestamp(column.type):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[column.type.unit]
        column = pc.divide(column.cast(pa.int64()).cast(pa.float64()), float(per_second))
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        column = column.cast(pa.float64())
    else:
        raise _bad(name, where, f"{column.type} is not a number of seconds or a timestamp")
    if column.null_count:
        raise _bad(name, where, f"{column.null_count} null event time(s)")
    if pc.any(pc.invert(pc.is_finite(column))).as_py():
        raise _bad(name, where, "event times must be finite")
    values: list[float] = column.to_pylist()
    return values


def checked_rows(
    table: pa.Table, featureset: FeatureSet, time_column: str, where: str
) -> list[tuple[Any, float, dict[str, Any]]]:
    """Rows for ``OnlineStore.write``, each column checked against the feature set.

    The entity and ``time_column`` must be in ``table``; columns that are not features are
    ignored here (a caller that must refuse them checks first).
    """
    entity = featureset.entity
    keys = check_column(table.column(entity.name), entity.dtype, entity.name, where, nulls=False)
    times = event_seconds(table.column(time_column), time_column, where)
    dtypes = {f.name: f.dtype for f in featureset.features if f.name in table.column_names}
    names = list(dtypes)
    columns = [check_column(table.column(n), dtypes[n], n, where) for n in names]
    return [
        (key, event_time, dict(zip(names, values, strict=True)))
        for key, event_time, *values in zip(keys, times, *columns, strict=True)
    ]

"""Pushing rows into an online store, validated against the feature set first.

Nothing is written unless every row is valid, so a bad batch never leaves half its rows
behind. Errors name the row index and the feature, e.g. ``rows[3].values.amount``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from modelplane.errors import InvalidSpec
from modelplane.features.base import OnlineStore, Row, WriteResult
from modelplane.spec.featureset import FeatureSet, check_value

__all__ = ["MAX_REPORTED_PROBLEMS", "push", "validate_rows"]

MAX_REPORTED_PROBLEMS = 20
"""Validation stops collecting after this many problems: enough to fix a batch by."""


class _Problems:
    def __init__(self) -> None:
        self.details: list[dict[str, str]] = []

    def add(self, field: str, problem: str) -> None:
        self.details.append({"field": field, "problem": problem})

    @property
    def full(self) -> bool:
        return len(self.details) >= MAX_REPORTED_PROBLEMS


def _check_row(featureset: FeatureSet, index: int, row: Any, problems: _Problems) -> Row | None:
    path = f"rows[{index}]"
    if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != 3:
        problems.add(path, "expected (entity_key, event_time, values)")
        return None
    key, event_time, values = row
    ok = True
    try:
        key = check_value(featureset.entity.dtype, key)
    except ValueError as exc:
        problems.add(f"{path}.{featureset.entity.name}", f"entity key: {exc}")
        ok = False
    if isinstance(event_time, bool) or not isinstance(event_time, int | float):
        problems.add(f"{path}.event_time", "expected seconds since the epoch (a number)")
        ok = False
    elif not math.isfinite(event_time):
        problems.add(f"{path}.event_time", f"{event_time} is not a finite number")
        ok = False
    if not isinstance(values, Mapping):
        problems.add(f"{path}.values", "expected a mapping of feature name to value")
        return None
    clean = _check_values(featureset, path, values, problems)
    return (key, float(event_time), clean) if ok and clean is not None else None


def _check_values(
    featureset: FeatureSet, path: str, values: Mapping[str, Any], problems: _Problems
) -> dict[str, Any] | None:
    clean: dict[str, Any] = {}
    ok = True
    for name, value in values.items():
        feature = featureset.feature(name) if isinstance(name, str) else None
        if feature is None:
            problems.add(f"{path}.values.{name}", f"not a feature of {featureset.ref}")
            ok = False
        elif value is not None:
            try:
                clean[name] = check_value(feature.dtype, value)
            except ValueError as exc:
                problems.add(f"{path}.values.{name}", str(exc))
                ok = False
    return clean if ok else None


def validate_rows(featureset: FeatureSet, rows: Sequence[Any]) -> list[Row]:
    """``rows`` checked against ``featureset``'s dtypes, ints made floats where declared.

    Raises :class:`~modelplane.errors.InvalidSpec` naming each bad row and feature.
    """
    problems = _Problems()
    clean: list[Row] = []
    for index, row in enumerate(rows):
        checked = _check_row(featureset, index, row, problems)
        if checked is not None:
            clean.append(checked)
        if problems.full:
            break
    if problems.details:
        head = problems.details[0]
        more = f" (and {len(problems.details) - 1} more)" if len(problems.details) > 1 else ""
        raise InvalidSpec(
            f"invalid rows for {featureset.ref}: {head['field']}: {head['problem']}{more}",
            details=problems.details,
        )
    return clean


def push(store: OnlineStore, featureset: FeatureSet, rows: Sequence[Any]) -> WriteResult:
    """Validate ``rows`` (``(entity_key, event_time, values)``) and write them to ``store``."""
    return store.write(featureset.name, featureset.version, validate_rows(featureset, rows))

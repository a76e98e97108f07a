"""push: rows validated against the feature set, errors naming row and feature."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.errors import InvalidSpec
from modelplane.features.base import WriteResult
from modelplane.features.ingest import MAX_REPORTED_PROBLEMS, push
from modelplane.features.memory import MemoryOnlineStore

from .kit import FeatureSetBuilder

FS = (
    FeatureSetBuilder()
    .entity("customer_id", "int64")
    .feature("amount", "float32")
    .feature("count", "uint8")
    .build()
)


def test_push_writes_valid_rows_with_ints_as_floats() -> None:
    store = MemoryOnlineStore()
    result = push(store, FS, [(1, 100, {"amount": 3, "count": 2}), (1, 50.0, {"count": None})])
    assert result == WriteResult(1, 1)
    [lookup] = store.read("tx", 1, [1], ["amount", "count"], 100.0)
    assert lookup.values == {"amount": 3.0, "count": 2}
    assert type(lookup.values["amount"]) is float


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (("1", 1.0, {}), "rows[1].customer_id"),
        ((1, "now", {}), "rows[1].event_time"),
        ((1, float("inf"), {}), "rows[1].event_time"),
        ((1, 1.0, {"amount": "3"}), "rows[1].values.amount"),
        ((1, 1.0, {"count": 256}), "rows[1].values.count"),
        ((1, 1.0, {"nope": 1}), "rows[1].values.nope"),
        ((1, 1.0, [1]), "rows[1].values"),
        ((1, 1.0), "rows[1]"),
    ],
)
def test_bad_rows_name_row_and_feature_and_write_nothing(row: Any, field: str) -> None:
    store = MemoryOnlineStore()
    with pytest.raises(InvalidSpec) as caught:
        push(store, FS, [(2, 1.0, {"count": 1}), row])
    assert caught.value.details[0]["field"] == field
    assert field in str(caught.value)
    assert not store.read("tx", 1, [2], ["count"], 1.0)[0].found


def test_problems_are_capped() -> None:
    rows = [(i, 1.0, {"count": -1}) for i in range(100)]
    with pytest.raises(InvalidSpec) as caught:
        push(MemoryOnlineStore(), FS, rows)
    assert len(caught.value.details) == MAX_REPORTED_PROBLEMS

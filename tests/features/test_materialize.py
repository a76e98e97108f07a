"""materialize: CSV and Parquet in exact batches, checked columns, resumable after a crash."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from modelplane.errors import Conflict, InvalidSpec
from modelplane.features.base import Lookup
from modelplane.features.materialize import BatchDone, materialize
from modelplane.features.memory import MemoryOnlineStore

from .kit import FeatureSetBuilder

FS = (
    FeatureSetBuilder()
    .entity("customer_id", "int64")
    .feature("amount", "float32")
    .feature("country", "string")
    .feature("count", "int16")
    .build()
)
ROWS = 1_000


class Interrupted(Exception):
    pass


def table(rows: int = ROWS) -> pa.Table:
    # Keys repeat, so the newest event per key must win whatever the batch boundaries.
    return pa.table(
        {
            "customer_id": [i % 300 for i in range(rows)],
            "event_time": [float(1000 + (i * 7919) % rows) for i in range(rows)],
            "amount": [None if i % 11 == 0 else i / 4 for i in range(rows)],
            "country": [["FR", "DE", "US"][i % 3] for i in range(rows)],
            "count": [i % 1000 for i in range(rows)],
        }
    )


def write(tmp_path: Path, kind: str, data: pa.Table) -> Path:
    path = tmp_path / f"rows.{kind}"
    if kind == "parquet":
        pq.write_table(data, path, row_group_size=170)
    else:
        pacsv.write_csv(data, path)
    return path


def state(store: MemoryOnlineStore) -> list[Lookup]:
    return store.read("tx", 1, list(range(300)), FS.feature_names, 5000.0)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_interrupted_then_resumed_equals_one_run(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, kind, table())
    whole = MemoryOnlineStore()
    report = materialize(whole, FS, path, batch_rows=64, progress=False)
    assert (report.rows, report.batches, report.resumed_from_batch) == (ROWS, 16, 0)
    assert report.written + report.skipped_older == ROWS
    assert report.rows_per_s > 0

    checkpoint = tmp_path / "run.ckpt"
    resumed = MemoryOnlineStore()

    def crash_after_five(done: BatchDone) -> None:
        if done.index == 4:
            raise Interrupted

    with pytest.raises(Interrupted):
        materialize(
            resumed,
            FS,
            path,
            batch_rows=64,
            checkpoint=checkpoint,
            on_batch=crash_after_five,
            progress=False,
        )
    assert checkpoint.exists()
    seen: list[int] = []
    again = materialize(
        resumed,
        FS,
        path,
        batch_rows=64,
        checkpoint=checkpoint,
        on_batch=lambda d: seen.append(d.index),
        progress=False,
    )
    assert seen == list(range(5, 16))
    assert (again.resumed_from_batch, again.batches, again.rows) == (5, 11, ROWS - 5 * 64)
    assert not checkpoint.exists()
    assert state(resumed) == state(whole)
    assert state(whole)[0].values["country"] in {"FR", "DE", "US"}


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "parquet", table())
    checkpoint = tmp_path / "run.ckpt"

    def stop(done: BatchDone) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        materialize(
            MemoryOnlineStore(),
            FS,
            path,
            batch_rows=64,
            checkpoint=checkpoint,
            on_batch=stop,
            progress=False,
        )
    with pytest.raises(Conflict, match="another run"):
        materialize(
            MemoryOnlineStore(), FS, path, batch_rows=100, checkpoint=checkpoint, progress=False
        )


@pytest.mark.parametrize(
    ("column", "values", "match"),
    [
        ("count", list(range(40_000, 40_000 + ROWS)), "column 'count'"),
        ("amount", ["x"] * ROWS, "column 'amount'"),
        ("customer_id", [None] * ROWS, "column 'customer_id'"),
        ("event_time", ["today"] * ROWS, "column 'event_time'"),
        ("amont", [1.0] * ROWS, "amont"),
    ],
)
def test_bad_columns_are_named(
    tmp_path: Path, column: str, values: list[object], match: str
) -> None:
    data = table()
    if column in data.column_names:
        data = data.set_column(data.column_names.index(column), column, pa.array(values))
    else:
        data = data.append_column(column, pa.array(values))
    path = write(tmp_path, "parquet", data)
    with pytest.raises(InvalidSpec, match=match):
        materialize(MemoryOnlineStore(), FS, path, batch_rows=500, progress=False)


def test_timestamps_and_unknown_formats(tmp_path: Path) -> None:
    data = table(10).set_column(
        1, "event_time", pa.array([1_000_000 * 1000 + i for i in range(10)], pa.timestamp("ms"))
    )
    store = MemoryOnlineStore()
    materialize(store, FS, write(tmp_path, "parquet", data), progress=False)
    assert store.read("tx", 1, [9], ["count"], 1_000_010.0)[0].event_times == {
        "count": 1_000_000.009
    }
    with pytest.raises(InvalidSpec, match=r"\.csv or \.parquet"):
        materialize(store, FS, tmp_path / "rows.json", progress=False)

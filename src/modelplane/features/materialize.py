"""Materialize a CSV or Parquet file into an online store, in batches, resumably.

The file is read in batches of exactly ``batch_rows`` rows (re-chunked, so the same file
always gives the same batches) and each column is checked once, vectorised, against the
feature set's dtypes. After each batch is written, a checkpoint file records how many
batches are done; a run that finds a checkpoint for the same file, feature set and batch
size skips those batches. Replaying a batch is harmless anyway: an equal event time
rewrites the same values (last write wins on event time), so a crash between a write and
its checkpoint costs one batch of work, never correctness. The checkpoint is removed when
the run completes.

File layout: one column named like the entity key, one event-time column (seconds since
the epoch, or an Arrow timestamp), and one column per feature; any other column is an
error, so a misspelt feature is not dropped silently. Nulls (and NaN) are missing values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modelplane.errors import Conflict, InvalidSpec
from modelplane.features.base import OnlineStore, Row, WriteResult
from modelplane.features.columns import arrow_type, checked_rows
from modelplane.spec.featureset import FeatureSet
from modelplane.types import Clock, SystemClock

__all__ = ["BatchDone", "MaterializeReport", "materialize", "read_batches"]


@dataclass(frozen=True, slots=True)
class BatchDone:
    """One batch written and checkpointed; ``index`` counts from 0 over the whole file."""

    index: int
    rows: int
    rows_done: int
    write: WriteResult


@dataclass(frozen=True, slots=True)
class MaterializeReport:
    """What a run did; rows and seconds count this run only, not resumed-over batches."""

    rows: int
    batches: int
    written: int
    skipped_older: int
    seconds: float
    resumed_from_batch: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _raw_batches(path: Path, featureset: FeatureSet, batch_rows: int) -> Iterator[pa.RecordBatch]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    elif suffix in (".csv", ".txt"):
        types = {f.name: arrow_type(f.dtype) for f in featureset.features}
        types[featureset.entity.name] = arrow_type(featureset.entity.dtype)
        with pacsv.open_csv(
            path, convert_options=pacsv.ConvertOptions(column_types=types)
        ) as reader:
            yield from reader
    else:
        raise InvalidSpec(f"{path}: expected a .csv or .parquet file")


def read_batches(path: Path, featureset: FeatureSet, batch_rows: int) -> Iterator[pa.Table]:
    """The file as tables of exactly ``batch_rows`` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        for batch in _raw_batches(path, featureset, batch_rows):
            pending.append(batch)
            held += batch.num_rows
            while held >= batch_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_rows)
                rest = table.slice(batch_rows)
                pending, held = rest.to_batches(), rest.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidSpec(f"{path}: cannot read: {exc}") from exc
    if held:
        yield pa.Table.from_batches(pending)


def _rows(table: pa.Table, featureset: FeatureSet, time_column: str, index: int) -> list[Row]:
    entity = featureset.entity
    unknown = set(table.column_names) - {entity.name, time_column, *featureset.feature_names}
    if unknown:
        raise InvalidSpec(
            f"columns {sorted(unknown)} are not features of {featureset.ref}",
            details=[{"field": name, "problem": "unknown column"} for name in sorted(unknown)],
        )
    where = f"batch {index}"
    for required in (entity.name, time_column):
        if required not in table.column_names:
            raise InvalidSpec(f"the file has no column {required!r}")
    return list(checked_rows(table, featureset, time_column, where))


def _fingerprint(path: Path, featureset: FeatureSet, batch_rows: int) -> dict[str, Any]:
    if path.suffix.lower() not in (".parquet", ".pq", ".csv", ".txt"):
        raise InvalidSpec(f"{path}: expected a .csv or .parquet file")
    try:
        stat = path.stat()
    except OSError as exc:
        raise InvalidSpec(f"{path}: cannot read: {exc.strerror}") from exc
    return {
        "file": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "featureset": featureset.ref,
        "batch_rows": batch_rows,
    }


def _resume_point(checkpoint: Path | None, fingerprint: dict[str, Any]) -> int:
    if checkpoint is None or not checkpoint.exists():
        return 0
    try:
        saved = json.loads(checkpoint.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidSpec(f"checkpoint {checkpoint} is unreadable: {exc}") from exc
    if saved.get("fingerprint") != fingerprint:
        raise Conflict(
            f"checkpoint {checkpoint} belongs to another run (file, feature set or batch"
            " size differ); remove it to start over"
        )
    return int(saved["batches_done"])


def _save(checkpoint: Path, fingerprint: dict[str, Any], batches_done: int) -> None:
    # Write then rename: a crash leaves the old checkpoint or the new one, never half of one.
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump({"fingerprint": fingerprint, "batches_done": batches_done}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, checkpoint)


def _progress(enabled: bool, console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>12,.0f} rows/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )


def _total_rows(path: Path) -> int | None:
    if path.suffix.lower() in (".parquet", ".pq"):
        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


def materialize(
    store: OnlineStore,
    featureset: FeatureSet,
    path: str | Path,
    *,
    batch_rows: int = 10_000,
    checkpoint: str | Path | None = None,
    event_time_column: str = "event_time",
    on_batch: Callable[[BatchDone], None] | None = None,
    progress: bool = True,
    console: Console | None = None,
    clock: Clock | None = None,
) -> MaterializeReport:
    """Write every row of ``path`` into ``store``; resumable through ``checkpoint``."""
    if batch_rows < 1:
        raise InvalidSpec(f"batch_rows must be at least 1, not {batch_rows}")
    path, clock = Path(path), clock or SystemClock()
    marker = None if checkpoint is None else Path(checkpoint)
    fingerprint = _fingerprint(path, featureset, batch_rows)
    skip = _resume_point(marker, fingerprint)
    started, rows, total = clock.monotonic(), 0, WriteResult()
    index = -1
    with _progress(progress, console) as bar:
        task = bar.add_task(f"materialize {featureset.ref}", total=_total_rows(path), rate=0.0)
        for index, table in enumerate(read_batches(path, featureset, batch_rows)):
            if index >= skip:
                result = store.write(
                    featureset.name,
                    featureset.version,
                    _rows(table, featureset, event_time_column, index),
                )
                rows, total = rows + table.num_rows, total + result
                if marker is not None:
                    _save(marker, fingerprint, index + 1)
                if on_batch is not None:
                    on_batch(BatchDone(index, table.num_rows, rows, result))
            rate = rows / max(clock.monotonic() - started, 1e-9)
            bar.update(task, advance=table.num_rows, rate=rate)
    if marker is not None:
        marker.unlink(missing_ok=True)
    seconds = clock.monotonic() - started
    return MaterializeReport(
        rows, max(0, index + 1 - skip), total.written, total.skipped_older, seconds, skip
    )

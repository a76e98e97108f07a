"""Checks and shard plans for a batch-score job, before any shard runs.

Everything here reads metadata only (Parquet footers, CSV rows counted in a stream) and
writes nothing: a job that fails a check leaves its output location as it was. The
checks, each an error naming the spec field at fault:

* ``work.input.url``: the dataset exists and reads as its format;
* ``work.input.url`` (columns): every signature input is a column of a compatible type;
* ``work.output.url``: the folder holds no other job's results unless ``overwrite``.

Model refs are resolved (and their absence reported) by :mod:`.models`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem

from modelplane.core.jobs import (
    SUCCESS_MARKER,
    ShardPlan,
    ShardReservation,
    ShardTask,
    part_name,
    plan_row_ranges,
)
from modelplane.errors import Conflict, InvalidSpec
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import Signature
from modelplane.spec.job import BatchScoreJob, DataFormat, InputData, Job, OutputData, Sharding

__all__ = [
    "ATTEMPTS_FOLDER",
    "CLAIM_MARKER",
    "DatasetInfo",
    "OutputState",
    "check_columns",
    "check_output",
    "claim_output",
    "inspect_dataset",
    "plan_batch_score",
    "plan_shards",
    "shard_task",
    "write_success",
]

CLAIM_MARKER = "_JOB"
"""Written into an output folder when a job starts writing there; holds the job's uid, so
two jobs never mix parts in one folder and a resumed job knows its own parts."""

ATTEMPTS_FOLDER = "_attempts"
"""Inside the output folder: where attempts write before their rename (readers of the
output skip names starting with ``_``)."""


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What planning needs to know about an input, from its metadata."""

    url: str
    format: DataFormat
    rows: int
    schema: pa.Schema
    row_group_rows: tuple[int, ...] = ()
    """Rows of each Parquet row group, in order; empty for CSV."""


def _fs(url: str) -> tuple[AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def _bad_input(url: str, problem: str) -> InvalidSpec:
    return InvalidSpec(
        f"work.input.url: {problem}",
        details=[{"field": "work.input.url", "problem": problem, "value": url}],
    )


def inspect_dataset(data: InputData) -> DatasetInfo:
    """Row count and schema of the input, from the Parquet footer or one pass over the CSV."""
    try:
        fs, path = _fs(data.url)
        exists = fs.isfile(path)
    except (ValueError, ImportError, OSError) as exc:
        raise _bad_input(data.url, f"cannot open '{data.url}': {exc}") from exc
    if not exists:
        raise _bad_input(data.url, f"'{data.url}' does not exist (or is not a file)")
    fmt = data.resolved_format
    try:
        with fs.open(path, "rb") as handle:
            if fmt == "parquet":
                meta = pq.ParquetFile(handle).metadata
                groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
                schema = meta.schema.to_arrow_schema()
                return DatasetInfo(data.url, fmt, meta.num_rows, schema, groups)
            return _inspect_csv(data.url, handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _bad_input(data.url, f"'{data.url}' is not readable as {fmt}: {exc}") from exc


def _inspect_csv(url: str, handle: Any) -> DatasetInfo:
    reader = pacsv.open_csv(handle)
    rows = 0
    for batch in reader:
        rows += batch.num_rows
    return DatasetInfo(url, "csv", rows, reader.schema)


_INTEGER = (pa.types.is_integer, pa.types.is_boolean)
_FLOAT = (pa.types.is_floating, pa.types.is_integer, pa.types.is_boolean, pa.types.is_decimal)
_TEXT = (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary)


def _type_name(column: pa.DataType) -> str:
    """A column's type in the words of the docs and of signatures (``string``, ``float64``),
    not Arrow's (``large_string``, ``double``)."""
    if any(test(column) for test in _TEXT):
        return "string"
    if pa.types.is_binary(column) or pa.types.is_large_binary(column):
        return "binary"
    if pa.types.is_floating(column):
        return f"float{column.bit_width}"
    if pa.types.is_boolean(column):
        return "bool"
    return str(column)


def _compatible(dtype: DType, column: pa.DataType) -> bool:
    """Whether a column's values cast to ``dtype`` without losing what they mean."""
    if pa.types.is_null(column):
        return True
    if dtype is DType.STRING:
        return any(test(column) for test in (*_TEXT, pa.types.is_binary))
    if dtype is DType.BOOL:
        return bool(pa.types.is_boolean(column) or pa.types.is_integer(column))
    if dtype.is_integer:
        return any(test(column) for test in _INTEGER)
    return any(test(column) for test in _FLOAT)


def check_columns(info: DatasetInfo, signature: Signature, passthrough: tuple[str, ...]) -> None:
    """Every signature input and passthrough column is in the dataset, with a usable type."""
    names = set(info.schema.names)
    problems: list[dict[str, Any]] = []
    for field in signature.inputs:
        if len(field.shape) != 1:
            problems.append({"field": "work.model", "problem": (
                f"input '{field.name}' has shape {list(field.shape)}; batch scoring reads one "
                "column per input")})  # fmt: skip
        elif field.name not in names:
            if field.required:
                problems.append({"field": "work.input.url", "problem": (
                    f"column '{field.name}' (a {field.dtype.value} input of the model) "
                    "is missing")})  # fmt: skip
        elif not _compatible(field.dtype, info.schema.field(field.name).type):
            found = _type_name(info.schema.field(field.name).type)
            need = field.dtype.value
            problems.append({"field": "work.input.url", "problem": (
                f"column '{field.name}' is {found}, the model needs {need}")})  # fmt: skip
    problems += [
        {"field": "work.passthrough", "problem": f"column '{name}' is not in the dataset"}
        for name in passthrough
        if name not in names
    ]
    if problems:
        head = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidSpec(f"{head['field']}: {head['problem']}{more}", details=problems)


@dataclass(frozen=True, slots=True)
class OutputState:
    """What an output folder holds now."""

    finished_by: str | None = None
    """The uid of the job whose ``_SUCCESS`` marker is there."""
    claimed_by: str | None = None
    """The uid of the job that claimed it (``_JOB``), finished or not."""
    parts: tuple[str, ...] = ()
    finished_name: str | None = None
    """The name of the job that finished it, where its marker says (errors name jobs so)."""
    claimed_name: str | None = None
    """The name of the job that claimed it, where its marker says."""


def _read_marker(fs: AbstractFileSystem, path: str) -> tuple[str | None, str | None]:
    """The job uid and name a marker records; ``(None, None)`` when there is none."""
    if not fs.isfile(path):
        return None, None
    with fs.open(path, "rb") as handle:
        text = handle.read().decode("utf-8", "replace")
    try:
        found = json.loads(text)
        uid, name = found.get("job_uid"), found.get("job")
    except (ValueError, AttributeError):
        return text.strip() or "(unknown)", None
    return (str(uid) if uid else "(unknown)"), (str(name) if name else None)


def _job_named(name: str | None, uid: str | None) -> str:
    """A job as people know it: by name; by uid only for markers that lack the name."""
    if name:
        return f"job {name}"
    return f"job uid {uid}" if uid and uid != "(unknown)" else "an unknown job"


def output_state(output: OutputData) -> OutputState:
    fs, root = _fs(output.url)
    if not fs.exists(root):
        return OutputState()
    if not fs.isdir(root):
        raise InvalidSpec(
            f"work.output.url: '{output.url}' is a file; it must be a folder",
            details=[{"field": "work.output.url", "problem": "is a file"}],
        )
    parts = tuple(sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)
                         if p.rsplit("/", 1)[-1].startswith("part-")))  # fmt: skip
    finished_by, finished_name = _read_marker(fs, f"{root}/{SUCCESS_MARKER}")
    claimed_by, claimed_name = _read_marker(fs, f"{root}/{CLAIM_MARKER}")
    return OutputState(finished_by, claimed_by, parts, finished_name, claimed_name)


def check_output(output: OutputData, job_uid: str) -> OutputState:
    """Refuse a folder holding another job's results (finished, or parts of an unfinished
    one) unless ``overwrite``; the job's own folder (a resume) is always accepted."""
    state = output_state(output)
    owner = state.finished_by or state.claimed_by
    if output.overwrite or owner == job_uid:
        return state
    if state.finished_by is not None:
        whose = _job_named(state.finished_name, state.finished_by)
        problem = (f"'{output.url}' holds the finished results of {whose}; "
                   "set work.output.overwrite (or --overwrite) to replace them")  # fmt: skip
    elif state.claimed_by is not None or state.parts:
        whose = _job_named(state.claimed_name, state.claimed_by)
        problem = (f"'{output.url}' holds parts of {whose}; "
                   "set work.output.overwrite (or --overwrite) to replace them")  # fmt: skip
    else:
        return state
    raise Conflict(f"work.output.url: {problem}",
                   details=[{"field": "work.output.url", "problem": problem}])  # fmt: skip


def claim_output(output: OutputData, job_uid: str, job_name: str | None = None) -> None:
    """Make the folder this job's: clear another job's parts and markers (only reached with
    ``overwrite`` or for the job's own folder), then write the claim marker."""
    state = check_output(output, job_uid)
    fs, root = _fs(output.url)
    fs.makedirs(f"{root}/{ATTEMPTS_FOLDER}", exist_ok=True)
    owner = state.finished_by or state.claimed_by
    if owner != job_uid:
        for name in (*state.parts, SUCCESS_MARKER, CLAIM_MARKER):
            if fs.exists(f"{root}/{name}"):
                fs.rm(f"{root}/{name}")
    with fs.open(f"{root}/{CLAIM_MARKER}", "wb") as handle:
        claim = {"job_uid": job_uid} if job_name is None else {"job_uid": job_uid, "job": job_name}
        handle.write(json.dumps(claim).encode())


def write_success(
    output: OutputData, job_uid: str, *, job_name: str, shards: int, rows: int, digest: str
) -> None:
    """Mark the folder finished by ``job_uid``: written once every shard is done."""
    fs, root = _fs(output.url)
    record = {"job_uid": job_uid, "job": job_name, "shards": shards, "rows": rows,
              "model_digest": digest}  # fmt: skip
    with fs.open(f"{root}/{SUCCESS_MARKER}", "wb") as handle:
        handle.write(json.dumps(record, sort_keys=True).encode())


def plan_shards(info: DatasetInfo, shard: Sharding, default_rows: int) -> tuple[ShardPlan, ...]:
    """Row ranges (or runs of row groups) covering every row once, in order."""
    if shard.row_groups is not None:
        if info.format != "parquet":
            raise InvalidSpec(
                "work.shard.row_groups: sharding by row groups needs Parquet input",
                details=[{"field": "work.shard.row_groups", "problem": "input is CSV"}],
            )
        return _by_row_groups(info.row_group_rows, shard.row_groups)
    if shard.count is not None:
        per = max(1, -(-info.rows // shard.count))
        return plan_row_ranges(info.rows, per)
    return plan_row_ranges(info.rows, shard.rows or default_rows)


def _by_row_groups(groups: tuple[int, ...], per_shard: int) -> tuple[ShardPlan, ...]:
    if not groups:
        return (ShardPlan(0, 0, 0),)
    plans = []
    start = 0
    for index, first in enumerate(range(0, len(groups), per_shard)):
        chosen = tuple(range(first, min(first + per_shard, len(groups))))
        rows = sum(groups[g] for g in chosen)
        plans.append(ShardPlan(index, start, start + rows, chosen))
        start += rows
    return tuple(plans)


def plan_batch_score(
    work: BatchScoreJob, signature: Signature, job_uid: str
) -> tuple[DatasetInfo, tuple[ShardPlan, ...]]:
    """Every check of a batch-score job, then its shards; writes nothing."""
    info = inspect_dataset(work.input)
    check_columns(info, signature, work.passthrough)
    check_output(work.output, job_uid)
    return info, plan_shards(info, work.shard, work.rows_per_shard or 100_000)


def shard_task(
    job: Job,
    job_uid: str,
    plan: ShardPlan,
    attempt: int,
    *,
    model_ref: str,
    model_digest: str,
    model_dir: str,
    signature: Signature,
) -> ShardTask:
    """The task of one attempt of a batch-score shard, with its final and attempt paths."""
    work = job.work
    if not isinstance(work, BatchScoreJob):
        raise TypeError(f"job {job.name} is {work.type}, not batch-score")
    root = work.output.url.rstrip("/")
    name = part_name(plan.index)
    columns = [f.name for f in signature.inputs] + [
        c for c in work.passthrough if c not in {f.name for f in signature.inputs}
    ]
    return ShardTask(
        job_name=job.name,
        job_uid=job_uid,
        job=job,
        plan=plan,
        attempt=attempt,
        final_path=f"{root}/{name}",
        temp_path=f"{root}/{ATTEMPTS_FOLDER}/{name}.{attempt}.tmp",
        reservation=ShardReservation.of(job),
        model_dir=model_dir,
        model_digest=model_digest,
        model_ref=model_ref,
        input_columns=tuple(columns),
    )

"""One attempt of one batch-score shard: read its rows, score them, write Parquet, commit.

Inside the shard's process, in this order:

1. the shard's rows are read (only the columns it needs) and a staging file is opened for
   writing: platform code, before any model code, while the process may still read the
   input and write the output folder;
2. the sandbox of model workers is entered (:mod:`modelplane.security.sandbox`) where
   asked: from here the process reads only its package and Python, writes only the file
   it already holds open, and has no network;
3. the package is verified against the pinned digest and loaded by the same runtime code
   as serving workers (:mod:`modelplane.runtime`), then called ``batch_rows`` rows at a time;
4. the output (request id ``JOB_UID/SHARD/ROW``, model version and digest, passthrough
   columns, then the model's outputs) is written to the staging file.

The commit happens outside: :func:`commit_shard` moves the finished staging file to the
final name without ever replacing one that exists, so a shard is written exactly once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from modelplane.core.jobs import ShardPlan, ShardTask
from modelplane.errors import IntegrityError
from modelplane.registry.digest import verify_package
from modelplane.runtime.base import LoadedModel, RuntimeOptions
from modelplane.runtime.registry import get_runtime
from modelplane.security.sandbox import SandboxPolicy, apply_sandbox
from modelplane.spec.job import BatchScoreJob, InputData, MaterializeJob, PythonJob

__all__ = [
    "REQUEST_ID",
    "VERSION_COLUMNS",
    "ShardResult",
    "commit_shard",
    "die_with_parent",
    "final_rows",
    "load_model",
    "output_table",
    "read_shard",
    "run_shard",
    "staging_path",
]

REQUEST_ID = "request_id"
_PR_SET_PDEATHSIG = 1
VERSION_COLUMNS = ("model_version", "model_digest")


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What the shard's process reports about itself when it ends."""

    rows: int
    cpu_seconds: float
    peak_memory_mib: float
    sandbox: str = ""
    """What the sandbox applied and what this node could not take away."""


def _work(task: ShardTask) -> BatchScoreJob:
    work = task.job.work
    if not isinstance(work, BatchScoreJob):
        raise TypeError(f"job {task.job_name} is {work.type}, not batch-score")
    return work


def _is_local(url: str) -> bool:
    fs, _ = fsspec.core.url_to_fs(url)
    return isinstance(fs, LocalFileSystem)


def staging_path(task: ShardTask) -> str:
    """Where the shard's process writes: the task's temporary path when the output is a
    local folder (one rename commits it), else a local file uploaded at commit."""
    if _is_local(task.temp_path):
        return str(fsspec.core.url_to_fs(task.temp_path)[1])
    folder = Path(tempfile.gettempdir()) / "modelplane-shards"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / task.attempt_id.replace("/", "_").replace("#", "."))


# ------------------------------------------------------------------------------- read


def _input(task: ShardTask) -> InputData:
    data = task.job.work.input
    if data is None:
        raise TypeError(f"job {task.job_name} has no input")
    return data


def read_shard(task: ShardTask) -> pa.Table:
    """The shard's rows of the input, only ``task.input_columns`` (all when empty).

    CSV columns named in ``task.extra["csv_types"]`` (``name=arrow type`` lines) are read as
    that type, so a key such as ``007`` stays a string instead of becoming the number 7.
    """
    data = _input(task)
    columns = list(task.input_columns) or None
    fs, path = fsspec.core.url_to_fs(data.url)
    with fs.open(path, "rb") as handle:
        if data.resolved_format == "parquet":
            return _read_parquet(pq.ParquetFile(handle), task.plan, columns)
        types = dict(
            line.split("=", 1) for line in task.extra.get("csv_types", "").splitlines() if line
        )
        return _read_csv(handle, task.plan, columns, types)


def _read_parquet(file: pq.ParquetFile, plan: ShardPlan, columns: list[str] | None) -> pa.Table:
    if plan.row_groups:
        return file.read_row_groups(list(plan.row_groups), columns=columns)
    pieces: list[pa.Table] = []
    offset = 0
    meta = file.metadata
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        start, stop = max(plan.row_start, offset), min(plan.row_stop, offset + rows)
        if start < stop:
            table = file.read_row_group(group, columns=columns)
            pieces.append(table.slice(start - offset, stop - start))
        offset += rows
        if offset >= plan.row_stop:
            break
    if not pieces:
        return file.schema_arrow.empty_table().select(columns or file.schema_arrow.names)
    return pa.concat_tables(pieces)


def _read_csv(
    handle: BinaryIO, plan: ShardPlan, columns: list[str] | None, types: dict[str, str]
) -> pa.Table:
    convert = pacsv.ConvertOptions(
        include_columns=columns or [],
        column_types={name: pa.type_for_alias(alias) for name, alias in types.items()},
    )
    reader = pacsv.open_csv(handle, convert_options=convert)
    pieces: list[pa.RecordBatch] = []
    offset = 0
    for batch in reader:
        start, stop = max(plan.row_start, offset), min(plan.row_stop, offset + batch.num_rows)
        if start < stop:
            pieces.append(batch.slice(start - offset, stop - start))
        offset += batch.num_rows
        if offset >= plan.row_stop:
            break
    return pa.Table.from_batches(pieces, schema=reader.schema)


# ------------------------------------------------------------------------------ score


def load_model(model_dir: str, digest: str | None, *, threads: int = 1) -> LoadedModel:
    """Verify the package (against the pinned digest) and load it as serving workers do."""
    verified = verify_package(Path(model_dir))
    if digest is not None and verified.digest != digest:
        raise IntegrityError(
            f"package {model_dir} has digest {verified.digest}, the job pinned {digest}",
            details=[{"field": "work.model", "problem": "digest differs from the pinned one"}],
        )
    manifest = verified.manifest
    options = RuntimeOptions(intra_op_threads=max(1, threads))
    return get_runtime(manifest.runtime.value, options).load(Path(model_dir), manifest)


def _inputs(table: pa.Table, names: list[str]) -> dict[str, npt.NDArray[Any]]:
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in names}


def _arrow(values: npt.NDArray[Any]) -> pa.Array:
    array = np.asarray(values)
    if array.ndim <= 1:
        return pa.array(array.reshape(-1) if array.ndim else array.reshape(1))
    width = int(np.prod(array.shape[1:]))
    flat = pa.array(np.ascontiguousarray(array).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def output_table(
    task: ShardTask, inputs: pa.Table, outputs: dict[str, npt.NDArray[Any]], first_row: int
) -> pa.Table:
    """Request ids, version columns, passthrough columns, then the model's outputs."""
    rows = inputs.num_rows
    prefix = f"{task.job_uid}/{task.plan.index}/"
    ids = [f"{prefix}{row}" for row in range(first_row, first_row + rows)]
    work = _work(task)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        REQUEST_ID: pa.array(ids, pa.string()),
        VERSION_COLUMNS[0]: pa.array([task.model_ref or ""] * rows, pa.string()),
        VERSION_COLUMNS[1]: pa.array([task.model_digest or ""] * rows, pa.string()),
    }
    for name in work.passthrough:
        columns[name] = inputs.column(name)
    for name, values in outputs.items():
        columns[name] = _arrow(values)
    return pa.table(columns)


def _scored(task: ShardTask, model: LoadedModel, table: pa.Table) -> Iterator[pa.Table]:
    work = _work(task)
    names = [n for n in (task.input_columns or table.column_names) if n not in work.passthrough]
    step = work.batch_rows if model.supports_batching else 1
    for start in range(0, table.num_rows, step):
        chunk = table.slice(start, step)
        outputs = model.predict(_inputs(chunk, names))
        yield output_table(task, chunk, outputs, task.plan.row_start + start)


# -------------------------------------------------------------------------------- run


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; a no-op elsewhere).

    A shard must not outlive whoever runs it; the setting is lost on a change of uid.
    """
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _enter_sandbox(task: ShardTask, sandbox: SandboxPolicy | None) -> str:
    if sandbox is None or task.model_dir is None:
        return ""
    policy = sandbox.for_package(
        task.model_dir,
        memory_mb=task.reservation.memory_mib,
        gpus=task.reservation.gpu_milli / 1000,
    )
    report = apply_sandbox(policy).summary()
    # dropping to the sandbox's uid cleared the parent-death signal: set it again
    die_with_parent()
    return report


def _usage(rows: int, report: str) -> ShardResult:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return ShardResult(rows, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, report)


def run_shard(task: ShardTask, staging: str, sandbox: SandboxPolicy | None = None) -> ShardResult:
    """Run the shard into ``staging`` (see the module's steps); the caller commits.

    ``materialize`` shards run platform code only and write to the online store, so they
    stay outside the sandbox; ``python`` shards run the team's code inside it.
    """
    from modelplane.backends.jobs import kinds

    work = task.job.work
    if isinstance(work, MaterializeJob):
        return _usage(kinds.run_materialize(task, read_shard(task), staging), "")
    table = read_shard(task) if work.input is not None else None
    if isinstance(work, PythonJob):
        with open(staging, "wb") as handle:
            report = _enter_sandbox(task, sandbox)
            verify_package(Path(task.model_dir or ""), task.model_digest)  # type: ignore[arg-type]
            rows = kinds.run_python(task, table, handle)
        return _usage(rows, report)
    assert table is not None
    with open(staging, "wb") as handle:
        report = _enter_sandbox(task, sandbox)
        model = load_model(
            task.model_dir or "", task.model_digest, threads=task.reservation.cpu_milli // 1000
        )
        writer: pq.ParquetWriter | None = None
        rows = 0
        for piece in _scored(task, model, table):
            if writer is None:
                writer = pq.ParquetWriter(handle, piece.schema)
            writer.write_table(piece)
            rows += piece.num_rows
        if writer is None:
            empty = output_table(task, table, {}, task.plan.row_start)
            writer = pq.ParquetWriter(handle, empty.schema)
        writer.close()
    return _usage(rows, report)


# ----------------------------------------------------------------------------- commit


def final_rows(final_path: str) -> int | None:
    """Rows of a shard's final file, or ``None`` when it is not there (not done yet)."""
    fs, path = fsspec.core.url_to_fs(final_path)
    if not fs.isfile(path):
        return None
    with fs.open(path, "rb") as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def commit_shard(task: ShardTask, staging: str) -> tuple[int, bool]:
    """Move the finished staging file to the final name; ``(rows, committed)``.

    A final file that already exists wins (an earlier attempt finished first) and the
    staging file is dropped, so the shard's output is written exactly once. A staging file
    whose rows differ from the plan is refused: a truncated write never becomes final.
    """
    with open(staging, "rb") as handle:
        rows = int(pq.ParquetFile(handle).metadata.num_rows)
    # a python job's function returns whatever number of rows it computes
    if not isinstance(task.job.work, PythonJob) and rows != task.plan.expected_rows:
        os.unlink(staging)
        raise IntegrityError(
            f"shard {task.plan.index} wrote {rows} rows, the plan has {task.plan.expected_rows}"
        )
    fs, final = fsspec.core.url_to_fs(task.final_path)
    if isinstance(fs, LocalFileSystem):
        try:
            os.link(staging, final)  # fails if the final file exists: never replaced
        except FileExistsError:
            os.unlink(staging)
            return rows, False
        os.unlink(staging)
        return rows, True
    if fs.exists(final):
        os.unlink(staging)
        return rows, False
    _, remote_temp = fsspec.core.url_to_fs(task.temp_path)
    fs.put_file(staging, remote_temp)
    fs.mv(remote_temp, final)
    os.unlink(staging)
    return rows, True

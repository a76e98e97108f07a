"""The ``materialize`` and ``python`` job kinds: their checks, plans and shard bodies.

``materialize`` backfills a feature set into the online store, one slice of the input per
shard. Writes are keyed by entity and event time, and an equal event time rewrites the same
values, so a shard that runs twice (a retry after a crash between its write and its
commit) leaves the same rows. Its done-once marker is a *receipt*: ``part-NNNNN.parquet``
listing the entity keys and event times it wrote, committed like a batch-score part, so an
attempt that finds it reports ``done`` without writing again. The shard runs platform code
only (no team code), outside the model sandbox: it must reach the online store.

``python`` runs a team's own function from a registered ``python``-runtime package that
the policy trusts for code (the same rule as serving such a package), in the sandbox of
model workers. The function is called once per shard as ``fn(rows, context)``:

* ``rows``: the shard's rows as a ``pyarrow.Table`` (``None`` without ``input``);
* ``context``: a :class:`ShardContext` (job, shard, parameters, a private scratch folder).

Over rows it returns a table (``pyarrow.Table``, ``pandas.DataFrame`` or a dict of
columns) or ``None``; with ``output`` each shard's table is written like batch-score's
parts, with the package version and digest beside its columns. A training job
(``push_as``) runs as one shard; its function builds a package into
``context.package_dir`` (``modelplane.package(...)``), which the shard carries out as the
one row of its part; when the job finishes the control plane pushes it under ``push_as``,
its lineage naming the job, the input data (with its sha256) and the code package.
"""

from __future__ import annotations

import ast
import importlib
import io
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modelplane.core.jobs import ShardPlan, ShardTask
from modelplane.errors import InvalidSpec
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.job import MaterializeJob, PythonJob

__all__ = [
    "EVENT_TIME",
    "PACKAGE_COLUMN",
    "ShardContext",
    "check_entrypoint_in",
    "check_materialize_columns",
    "materialize_rows",
    "python_output",
    "run_materialize",
    "run_python",
    "training_package",
]

EVENT_TIME = "event_time"
"""The event-time column of a materialize input, as ``modelplane features materialize``."""
PACKAGE_COLUMN = "package_tar"
"""The one column of a training shard's part: the package it built, as a tar archive."""
_MAX_PACKAGE_BYTES = 1 << 30


# -------------------------------------------------------------------------- materialize


def check_materialize_columns(schema: pa.Schema, featureset: FeatureSet) -> None:
    """The entity key and ``event_time`` are columns; every other column is a feature
    (a misspelt feature is an error, never dropped silently)."""
    names = set(schema.names)
    problems = [
        {"field": "work.input.url", "problem": f"column '{need}' ({what}) is missing"}
        for need, what in ((featureset.entity.name, "the entity key"), (EVENT_TIME, "event time"))
        if need not in names
    ]
    known = {featureset.entity.name, EVENT_TIME, *featureset.feature_names}
    problems += [
        {"field": "work.input.url",
         "problem": f"column '{name}' is not a feature of {featureset.ref}"}
        for name in schema.names if name not in known
    ]  # fmt: skip
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidSpec(f"work.input.url: {problems[0]['problem']}{more}", details=problems)


def materialize_rows(
    table: pa.Table, featureset: FeatureSet, where: str
) -> list[tuple[Any, float, dict[str, Any]]]:
    """Rows for ``OnlineStore.write``, each column checked against the feature set."""
    from modelplane.features.columns import checked_rows

    return checked_rows(table, featureset, EVENT_TIME, where)


def run_materialize(task: ShardTask, table: pa.Table, staging: str) -> int:
    """Write the shard's rows into the online store, then its receipt into ``staging``."""
    from modelplane.features.stores import open_online_store

    work = task.job.work
    assert isinstance(work, MaterializeJob)
    featureset = FeatureSet.model_validate_json(task.extra["feature_set"])
    store = open_online_store(task.extra["feature_store_url"])
    keys: list[str] = []
    times: list[float] = []
    try:
        for start in range(0, table.num_rows, work.batch_rows):
            chunk = table.slice(start, work.batch_rows)
            where = f"shard {task.plan.index}, row {task.plan.row_start + start}"
            rows = materialize_rows(chunk, featureset, where)
            store.write(featureset.name, featureset.version, rows)
            keys += [str(key) for key, _, _ in rows]
            times += [event_time for _, event_time, _ in rows]
    finally:
        store.close()
    receipt = pa.table(
        {featureset.entity.name: pa.array(keys, pa.string()), EVENT_TIME: pa.array(times)}
    )
    pq.write_table(receipt, staging)
    return int(receipt.num_rows)


# ------------------------------------------------------------------------------- python


@dataclass(frozen=True, slots=True)
class ShardContext:
    """What a job's function is told about the shard it runs."""

    job: str
    job_uid: str
    shard: int
    row_start: int
    row_stop: int
    parameters: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    scratch_dir: str = ""
    """A private, writable folder (the sandbox's tmp): the only place the code may write."""
    package_dir: str = ""
    """Training jobs: where the function builds the package to push (must not exist yet)."""


def _source_of(package_dir: Path, module: str) -> Path | None:
    base = package_dir.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def check_entrypoint_in(package_dir: Path, entrypoint: str) -> None:
    """The package ships ``module`` and it defines ``function`` at its top level: read from
    its source, never run, so a bad entry point is refused before any shard starts."""
    module, _, function = entrypoint.partition(":")
    source = _source_of(package_dir, module)
    if source is None:
        shipped = sorted(p.name for p in package_dir.glob("*.py"))
        problem = f"the package has no module '{module}' (it ships {', '.join(shipped) or 'none'})"
        raise InvalidSpec(
            f"work.entrypoint: {problem}",
            details=[{"field": "work.entrypoint", "problem": problem, "value": entrypoint}],
        )
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (SyntaxError, UnicodeDecodeError) as exc:
        problem = f"module '{module}' does not parse: {exc}"
        raise InvalidSpec(
            f"work.entrypoint: {problem}",
            details=[{"field": "work.entrypoint", "problem": problem}],
        ) from exc
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    defined |= {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    defined |= {  # a function the module imports from elsewhere is one it has too
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    if function.split(".")[0] not in defined:
        problem = f"module '{module}' defines no function '{function}'"
        raise InvalidSpec(
            f"work.entrypoint: {problem}",
            details=[{"field": "work.entrypoint", "problem": problem, "value": entrypoint}],
        )


def _function(package_dir: str, entrypoint: str) -> Any:
    module_name, _, path = entrypoint.partition(":")
    # the package folder first, so its module wins over an installed one of the same name
    sys.path.insert(0, package_dir)
    top = module_name.split(".")[0]
    for loaded in [m for m in sys.modules if m == top or m.startswith(f"{top}.")]:
        del sys.modules[loaded]  # another package's module of the same name, imported before
    module = importlib.import_module(module_name)
    target: Any = module
    for part in path.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise InvalidSpec(f"work.entrypoint: '{entrypoint}' is not callable")
    return target


def python_output(returned: Any, task: ShardTask) -> pa.Table:
    """The function's table, with the package version and digest beside its columns."""
    if returned is None:
        table = pa.table({})
    elif isinstance(returned, pa.Table):
        table = returned
    elif isinstance(returned, Mapping):
        table = pa.table(dict(returned))
    elif type(returned).__name__ == "DataFrame":
        table = pa.Table.from_pandas(returned, preserve_index=False)
    else:
        raise InvalidSpec(
            f"work.entrypoint: the function returned {type(returned).__name__}; a shard's"
            " function returns a pyarrow Table, a pandas DataFrame, a dict of columns or None"
        )
    rows = table.num_rows
    for name, value in (("package_version", task.model_ref), ("package_digest", task.model_digest)):
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value or ""] * rows, pa.string()))
    return table


def _tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    data = buffer.getvalue()
    if len(data) > _MAX_PACKAGE_BYTES:
        raise InvalidSpec(f"the package built is {len(data)} bytes; at most 1 GiB is carried")
    return data


def run_python(task: ShardTask, table: pa.Table | None, staging: Any) -> int:
    """Call the job's function on the shard (inside the sandbox, entered by the caller)
    and write its table, or the package it built, to the open ``staging`` file."""
    work = task.job.work
    assert isinstance(work, PythonJob)
    function = _function(task.model_dir or "", work.entrypoint)
    scratch = tempfile.mkdtemp(prefix="shard-")
    context = ShardContext(
        job=task.job_name, job_uid=task.job_uid, shard=task.plan.index,
        row_start=task.plan.row_start, row_stop=task.plan.row_stop,
        parameters=dict(work.parameters), scratch_dir=scratch,
        package_dir=str(Path(scratch) / "package") if work.push_as else "",
    )  # fmt: skip
    returned = function(table, context)
    if work.push_as:
        built = Path(context.package_dir)
        if not (built / "modelplane.yaml").is_file():
            raise InvalidSpec(
                f"work.push_as: the function built no package in context.package_dir"
                f" ({context.package_dir}); build one there with modelplane.package(...)"
            )
        out = pa.table({PACKAGE_COLUMN: pa.array([_tar(built)], pa.large_binary())})
    else:
        out = python_output(returned, task)
    pq.write_table(out, staging)
    return int(out.num_rows)


def training_package(part: str, into: Path) -> Path:
    """Unpack the package a training shard carried in its part file into ``into``."""
    table = pq.read_table(part, columns=[PACKAGE_COLUMN])
    if table.num_rows != 1:
        raise InvalidSpec(f"{part}: a training shard's part holds one package")
    data = table.column(PACKAGE_COLUMN)[0].as_py()
    into.mkdir(parents=True, exist_ok=False)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall(into, filter="data")  # refuses links and paths leaving ``into``
    return into


def plan_one_shard(rows: int) -> tuple[ShardPlan, ...]:
    """A training job's single shard over every input row."""
    return (ShardPlan(0, 0, max(0, rows)),)

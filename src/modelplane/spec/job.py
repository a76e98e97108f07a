"""Jobs: declarative batch work (batch scoring, feature backfills, a team's own code).

A job runs in shards. Each shard reserves ``resources``; the queue grows a job toward
``parallelism.max`` shards at once while capacity is free and shrinks it toward ``min``
when other work needs it. A shard's output is written under a temporary name and renamed
when complete, so every shard is done exactly once, even across retries and restarts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.endpoint import check_model_ref
from modelplane.spec.names import Name, check_name

__all__ = [
    "BatchScoreJob",
    "Budget",
    "DataFormat",
    "InputData",
    "Job",
    "JobKind",
    "JobResources",
    "MaterializeJob",
    "OutputData",
    "Parallelism",
    "PythonJob",
    "Retries",
    "Sharding",
    "check_entrypoint",
]

DataFormat = Literal["parquet", "csv"]


def check_entrypoint(value: str) -> str:
    """``module:function`` with dotted identifiers on both sides."""
    module, sep, function = value.partition(":")
    parts = [*module.split("."), *function.split(".")]
    if not sep or not all(part.isidentifier() for part in parts):
        raise PydanticCustomError(
            "entrypoint", "'{value}' is not 'module:function'", {"value": value}
        )
    return value


class JobResources(BaseModel):
    """What one shard reserves while it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: float = Field(default=1.0, gt=0, le=1024)
    """CPU cores per shard (fractions allowed)."""
    memory_mb: int = Field(default=1024, gt=0, le=16 * 1024 * 1024)
    """Memory per shard, in MiB; a shard above it is stopped where the sandbox applies."""
    gpus: float = Field(default=0.0, ge=0, le=64)
    """GPUs per shard; a fraction shares one device and is charged as that fraction."""
    gpu_model: str | None = Field(default=None, min_length=1, max_length=63)
    """The GPU model the shard needs (e.g. `A10`); none: any."""

    @model_validator(mode="after")
    def _whole_or_fraction(self) -> JobResources:
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise PydanticCustomError(
                "gpus", "more than one GPU must be a whole number, got {gpus}", {"gpus": self.gpus}
            )
        if self.gpu_model is not None and self.gpus == 0:
            raise PydanticCustomError("gpu_model", "gpu_model is set but gpus is 0", {})
        return self

    @property
    def cpu_milli(self) -> int:
        return round(self.cpu * 1000)

    @property
    def gpu_milli(self) -> int:
        return round(self.gpus * 1000)


class Parallelism(BaseModel):
    """How many shards of the job may run at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int = Field(default=1, ge=1, le=10_000)
    """Shards kept running when other work needs capacity (below it the job waits)."""
    max: int = Field(default=4, ge=1, le=10_000)
    """Most shards at once while capacity is free."""

    @model_validator(mode="after")
    def _ordered(self) -> Parallelism:
        if self.min > self.max:
            raise PydanticCustomError(
                "parallelism",
                "min ({min}) is above max ({max})",
                {"min": self.min, "max": self.max},
            )
        return self


class Retries(BaseModel):
    """How a failed shard is retried before the job fails with its error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: int = Field(default=3, ge=0, le=100)
    """Retries per shard after its first attempt; preemptions do not count."""
    backoff_s: float = Field(default=5.0, ge=0, le=86_400)
    """Wait before the first retry; doubled for each further one."""


class Budget(BaseModel):
    """Most the job may cost; admission refuses to start shards past it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: float = Field(gt=0)
    """The amount, in `currency`, at the cluster model's prices."""
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    """An ISO 4217 code."""


class InputData(BaseModel):
    """A dataset: a local path or any fsspec URL, Parquet or CSV."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=1, max_length=4096)
    """A local path, `file://…`, or any fsspec URL (`s3://…`, `gs://…`)."""
    format: DataFormat | None = None
    """`parquet` or `csv`; none: from the URL's extension."""

    @property
    def resolved_format(self) -> DataFormat:
        if self.format is not None:
            return self.format
        lowered = self.url.lower().rstrip("/")
        return "csv" if lowered.endswith((".csv", ".csv.gz")) else "parquet"


class OutputData(BaseModel):
    """Where shard outputs go: a folder (local or fsspec URL) of Parquet files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=1, max_length=4096)
    """The output folder; each shard writes `part-NNNNN.parquet`, the job `_SUCCESS`."""
    overwrite: bool = False
    """Whether a folder holding another finished job's results may be written over."""


class Sharding(BaseModel):
    """How the input is split: fixed row ranges, or groups of Parquet row groups."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int | None = Field(default=None, ge=1, le=1_000_000_000)
    """Rows per shard (the last shard may hold fewer)."""
    row_groups: int | None = Field(default=None, ge=1, le=1_000_000)
    """Parquet row groups per shard (Parquet input only)."""
    count: int | None = Field(default=None, ge=1, le=100_000)
    """Number of shards of near-equal rows, when neither `rows` nor `row_groups` is set."""

    @model_validator(mode="after")
    def _one_way(self) -> Sharding:
        chosen = [n for n in ("rows", "row_groups", "count") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise PydanticCustomError(
                "shard",
                "set one of rows, row_groups or count, not {both}",
                {"both": " and ".join(chosen)},
            )
        return self


class BatchScoreJob(BaseModel):
    """Score a dataset with a registered model version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["batch-score"] = "batch-score"
    """Which kind of job."""
    model: str
    """`name:version` or `name@alias` (an alias is pinned to its version at submit)."""
    input: InputData
    """The rows to score; columns named like the model's signature inputs."""
    output: OutputData
    """Where the scores go."""
    shard: Sharding = Sharding()
    """How the input is split; default: 100,000 rows per shard."""
    batch_rows: int = Field(default=4096, ge=1, le=1_000_000)
    """Rows per call to the model inside a shard."""
    passthrough: tuple[str, ...] = ()
    """Input columns copied to the output beside the scores (e.g. an id)."""

    @field_validator("model")
    @classmethod
    def _ref(cls, value: str) -> str:
        return check_model_ref(value)

    @property
    def rows_per_shard(self) -> int | None:
        if self.shard.rows is None and self.shard.row_groups is None and self.shard.count is None:
            return 100_000
        return self.shard.rows


class MaterializeJob(BaseModel):
    """A feature-set backfill (`modelplane features materialize`) split into shards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["materialize"] = "materialize"
    """Which kind of job."""
    feature_set: str
    """`name` (latest version) or `name:version`."""
    input: InputData
    """Rows with the entity key, `event_time` and feature columns (no other column)."""
    shard: Sharding = Sharding()
    """How the input is split; default: 100,000 rows per shard."""
    batch_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    """Rows per write to the online store."""

    @field_validator("feature_set")
    @classmethod
    def _ref(cls, value: str) -> str:
        name, sep, version = value.partition(":")
        check_name(name)
        if sep and not (version.isdigit() and int(version) >= 1):
            raise PydanticCustomError(
                "feature_set", "'{value}' is not 'name' or 'name:version'", {"value": value}
            )
        return value


class PythonJob(BaseModel):
    """A team's own code over shards, from a registered, signed `python` package.

    The code is never taken from the request: `package` names a registered model version
    whose signature the policy trusts, and `entrypoint` a function inside it, run in the
    same sandbox as model workers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["python"] = "python"
    """Which kind of job."""
    package: str
    """The registered package holding the code: `name:version` or `name@alias`."""
    entrypoint: str
    """`module:function` inside the package (a python-runtime package ships `model.py`:
    `model:train`), called once per shard as `fn(rows, context)`."""
    input: InputData | None = None
    """Rows handed to the function shard by shard; none: one shard without input."""
    output: OutputData | None = None
    """Where each shard's returned table goes; none: beside the job's state."""
    shard: Sharding = Sharding()
    """How the input is split."""
    parameters: dict[str, str | int | float | bool] = {}
    """Plain values passed to the function (and recorded as lineage of what it pushes)."""
    push_as: Name | None = None
    """A model name: the job runs as one shard over all of its input, and the package its
    function builds in `context.package_dir` is pushed under this name when the job
    finishes, with lineage to the job, its input and the code package."""

    @field_validator("package")
    @classmethod
    def _package_ref(cls, value: str) -> str:
        return check_model_ref(value)

    @field_validator("entrypoint")
    @classmethod
    def _entry(cls, value: str) -> str:
        return check_entrypoint(value)


JobKind = Annotated[BatchScoreJob | MaterializeJob | PythonJob, Field(discriminator="type")]


class Job(BaseModel):
    """Batch work of a team, run in shards through the queue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["Job"] = "Job"
    name: Name
    """The job's name, unique among jobs."""
    team: Name
    """The owning team (quota, cost, audit)."""
    tier: str = Field(default="batch", min_length=1, max_length=63)
    """A tier of the policy; `batch` work is elastic and preemptible."""
    resources: JobResources = JobResources()
    """What each shard reserves."""
    parallelism: Parallelism = Parallelism()
    """Shards at once: grown toward `max` while capacity is free."""
    deadline: datetime | None = None
    """When the job must be finished (ISO 8601 with a time zone); unfinished shards are
    cancelled after it and the job fails."""
    budget: Budget | None = None
    """Most the job may cost; none: no limit."""
    retries: Retries = Retries()
    """Retries of a failing shard."""
    work: JobKind
    """What the job does: `type` is `batch-score`, `materialize` or `python`."""
    labels: dict[str, str] = {}
    """Free-form labels for people and tools."""
    pins: dict[str, str] = {}
    """Written at submit, not by hand: the model or package ref (an alias such as
    `fraud@champion`) → the version it resolved to then (`fraud:3`)."""

    @field_validator("deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise PydanticCustomError(
                "deadline", "deadline needs a time zone (e.g. 2026-01-31T18:00:00Z)", {}
            )
        return value

    @property
    def model_ref(self) -> str | None:
        """The registered model or package the job runs, pinned when submitted."""
        if isinstance(self.work, BatchScoreJob):
            ref = self.work.model
        elif isinstance(self.work, PythonJob):
            ref = self.work.package
        else:
            return None
        return self.pins.get(ref, ref)

"""The state store's tables, as SQLAlchemy 2 typed declarative classes.

These classes describe the schema the code expects; the migrations in
``store/migrations/versions`` create it. A test compares the two, so a change here
without a migration fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AliasHistoryRow",
    "AliasRow",
    "AnswerRow",
    "ApiTokenRow",
    "AuditEventRow",
    "AuditHeadRow",
    "Base",
    "DatasetLineageRow",
    "FeatureLineageRow",
    "GENESIS_HASH",
    "JobEventRow",
    "JobRow",
    "JobShardRow",
    "ModelRow",
    "ModelVersionRow",
    "OutcomeRow",
    "PredictionRow",
    "RequestRow",
    "ResourceRow",
    "SloIntervalRow",
    "UTCDateTime",
    "UsageIntervalRow",
    "UsageNodeRow",
    "VersionSignatureRow",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first audit event."""

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every engine.

    SQLite keeps no time zone, so values are stored as naive UTC and read back aware;
    PostgreSQL's ``timestamptz`` is converted to UTC so equal instants compare and hash
    the same everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be time-zone aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012  (SQLAlchemy reads this class attribute)
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class ModelRow(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[datetime]
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    team: Mapped[str | None] = mapped_column(String(63))
    """The owning team; ``None`` for models registered before teams (admin-only writes)."""


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_name", "version"),
        UniqueConstraint("model_name", "digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(63), ForeignKey("models.name"))
    version: Mapped[int]
    digest: Mapped[str] = mapped_column(String(71))
    manifest: Mapped[dict[str, Any]]
    runtime: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    archived: Mapped[bool] = mapped_column(Boolean, default=False)


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_name", "version"], ["model_versions.model_name", "model_versions.version"]
        ),
    )

    model_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    alias: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int]


class AliasHistoryRow(Base):
    __tablename__ = "alias_history"
    __table_args__ = (Index(None, "model_name", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(63))
    alias: Mapped[str] = mapped_column(String(63))
    from_version: Mapped[int | None]
    to_version: Mapped[int | None]
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text, default="")


class FeatureLineageRow(Base):
    """One feature set (and version) a model version reads."""

    __tablename__ = "version_features"
    __table_args__ = (Index(None, "feature_set", "feature_set_version"),)

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    feature_set: Mapped[str] = mapped_column(String(200), primary_key=True)
    feature_set_version: Mapped[int] = mapped_column(Integer, primary_key=True)


class DatasetLineageRow(Base):
    """One dataset a model version was trained on."""

    __tablename__ = "version_datasets"
    __table_args__ = (Index(None, "uri"), Index(None, "sha256"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))


class AuditEventRow(Base):
    """One link of the hash chain; ``seq`` is assigned under the chain lock, never reused."""

    __tablename__ = "audit_events"
    __table_args__ = (Index(None, "subject"), Index(None, "action"), Index(None, "actor"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)
    before: Mapped[Any | None] = mapped_column(JSON)
    after: Mapped[Any | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64))
    """HMAC of ``hash`` under a key kept outside the database; ``None`` before 0005."""


class AuditHeadRow(Base):
    """The chain head: one row, locked by every append, so appends form one line.

    It also remembers the last seq and hash, which is how a deleted tail is noticed.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))


class ApiTokenRow(Base):
    """An API token: a subject in a team with scopes; only the secret's hash is kept."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index(None, "team"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    team: Mapped[str] = mapped_column(String(63))
    scopes: Mapped[Any] = mapped_column(JSON)
    endpoints: Mapped[Any | None] = mapped_column(JSON)
    """Endpoints a ``predict`` scope is limited to; ``None`` for every endpoint of the team."""
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class VersionSignatureRow(Base):
    """One ed25519 signature of a model version's digest."""

    __tablename__ = "version_signatures"
    __table_args__ = (UniqueConstraint("version_id", "key_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    key_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    signed_by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]


class ResourceRow(Base):
    """A declarative resource (endpoint, policy, …): desired spec and observed status."""

    __tablename__ = "resources"

    kind: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    spec: Mapped[dict[str, Any]]
    status: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime]


class PredictionRow(Base):
    """One kept prediction (sampled, failed or answered by a fallback): the evidence
    ``modelplane explain`` reads. Oldest rows are trimmed beyond a configured count."""

    __tablename__ = "prediction_log"
    __table_args__ = (Index(None, "request_id"), Index(None, "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    endpoint: Mapped[str] = mapped_column(String(63))
    contract: Mapped[str] = mapped_column(String(63))
    contract_version: Mapped[int]
    model_version: Mapped[str | None] = mapped_column(String(200))
    digest: Mapped[str | None] = mapped_column(String(71))
    route: Mapped[str | None] = mapped_column(String(200))
    route_kind: Mapped[str] = mapped_column(String(16))
    fallback_reason: Mapped[str | None] = mapped_column(String(63))
    status: Mapped[int]
    error_code: Mapped[str | None] = mapped_column(String(63))
    detail: Mapped[str | None] = mapped_column(Text)
    queue_ms: Mapped[float] = mapped_column(Float)
    batch_ms: Mapped[float] = mapped_column(Float)
    compute_ms: Mapped[float] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float)
    batch_size: Mapped[int | None]
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What the feature join fed the model: set versions and value ages (see 0003)."""


class RequestRow(Base):
    """A brief record of a request the prediction log did not keep (a plain success not
    sampled): what ``modelplane explain`` says of any request for a bounded time. Rows
    older than the configured retention are deleted (see 0006)."""

    __tablename__ = "request_log"
    __table_args__ = (Index(None, "request_id"), Index(None, "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)
    """Wall-clock time (Unix seconds) the response was sent."""
    endpoint: Mapped[str] = mapped_column(String(63))
    contract: Mapped[str] = mapped_column(String(63))
    contract_version: Mapped[int]
    model_version: Mapped[str | None] = mapped_column(String(200))
    digest: Mapped[str | None] = mapped_column(String(71))
    route: Mapped[str | None] = mapped_column(String(200))
    route_kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[int]
    queue_ms: Mapped[float] = mapped_column(Float)
    batch_ms: Mapped[float] = mapped_column(Float)
    compute_ms: Mapped[float] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float)
    batch_size: Mapped[int | None]


class SloIntervalRow(Base):
    """One endpoint's good and total requests over an interval ending at ``at`` (epoch
    seconds): the SLO recorder's evidence, from which every window's budget is summed.
    Intervals older than a few hours are merged into hourly rows (``span_s`` 3600)."""

    __tablename__ = "slo_intervals"
    __table_args__ = (Index(None, "endpoint", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(63))
    at: Mapped[float] = mapped_column(Float)
    span_s: Mapped[float] = mapped_column(Float)
    avail_good: Mapped[int] = mapped_column(BigInteger)
    avail_total: Mapped[int] = mapped_column(BigInteger)
    latency_good: Mapped[int] = mapped_column(BigInteger)
    latency_total: Mapped[int] = mapped_column(BigInteger)


# --- outcomes (0008) ---


class AnswerRow(Base):
    """What a model answered to one request, kept for as long as its outcome may arrive
    (weeks): the side of the outcome join the prediction and request logs keep too briefly.
    ``outputs`` maps each output to its per-row values; ``feature_sets`` lists the
    ``set:version`` the request-time join read."""

    __tablename__ = "answers"
    __table_args__ = (Index(None, "endpoint", "request_id"), Index(None, "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)
    """Wall-clock time (Unix seconds) the response was sent."""
    endpoint: Mapped[str] = mapped_column(String(63))
    model_version: Mapped[str] = mapped_column(String(200))
    route: Mapped[str | None] = mapped_column(String(200))
    route_kind: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    """Rows answered: label coverage counts rows, not requests."""
    feature_sets: Mapped[Any | None] = mapped_column(JSON)
    outputs: Mapped[Any] = mapped_column(JSON)


class OutcomeRow(Base):
    """One observed outcome of one answered row: ground truth (``name`` ``label``) or a
    named business value, keyed by request id and row. A later value for the same key
    replaces the earlier one (a corrected label)."""

    __tablename__ = "outcomes"
    __table_args__ = (
        UniqueConstraint("endpoint", "request_id", "row", "name"),
        Index(None, "endpoint", "arrived_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(63))
    request_id: Mapped[str] = mapped_column(String(200))
    row: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(63))
    value: Mapped[float] = mapped_column(Float)
    arrived_at: Mapped[float] = mapped_column(Float)
    """Wall-clock time (Unix seconds) the outcome was recorded: label latency is this minus
    the answer's ``at``."""
    source: Mapped[str] = mapped_column(String(32))
    """``api`` (the feedback route) or ``import`` (a Parquet file)."""


# --- jobs (0007) ---


class JobRow(Base):
    """One submitted job's run: what the queue decided and where it stands.

    The job's spec is a ``Job`` resource (versioned and audited by ``apply``); this row is
    the run of one generation of it, written by the job controller, so that a restarted
    control plane resumes from what is here. Times are wall-clock Unix seconds.
    """

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("uid"), Index(None, "state"), Index(None, "team"))

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(String(36))
    generation: Mapped[int] = mapped_column(Integer)
    """The ``Job`` resource generation this run is of."""
    team: Mapped[str] = mapped_column(String(63))
    tier: Mapped[str] = mapped_column(String(63))
    work_type: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    """One line: why it waits, why it failed, or what it is doing."""
    model_ref: Mapped[str | None] = mapped_column(String(200))
    """The model or package version pinned at submit (``fraud:3``)."""
    model_digest: Mapped[str | None] = mapped_column(String(71))
    output_url: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[float] = mapped_column(Float)
    admitted_at: Mapped[float | None] = mapped_column(Float)
    """When its first shard was admitted: ``admitted_at - submitted_at`` is the queue wait."""
    finished_at: Mapped[float | None] = mapped_column(Float)
    shards_total: Mapped[int] = mapped_column(Integer, default=0)
    """0 until the job is planned."""
    rows_total: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)


class JobShardRow(Base):
    """One shard of a job: its rows, its attempts and what they used (summed)."""

    __tablename__ = "job_shards"
    __table_args__ = (Index(None, "state"),)

    job: Mapped[str] = mapped_column(
        String(63), ForeignKey("jobs.name", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    row_start: Mapped[int] = mapped_column(BigInteger)
    row_stop: Mapped[int] = mapped_column(BigInteger)
    row_groups: Mapped[Any | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts started, preempted ones included."""
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Failed attempts: these count against the job's retry limit; preemptions do not."""
    last_error: Mapped[str | None] = mapped_column(Text)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False)
    """The running attempt was admitted on quota borrowed from the cohort."""
    not_before: Mapped[float | None] = mapped_column(Float)
    """No new attempt before this time (retry backoff)."""
    started_at: Mapped[float | None] = mapped_column(Float)
    """When the current (or last) attempt started."""
    finished_at: Mapped[float | None] = mapped_column(Float)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    """Seconds its attempts held a reservation, all attempts summed."""
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    peak_memory_mib: Mapped[float] = mapped_column(Float, default=0.0)


class JobEventRow(Base):
    """One line of a job's log: admissions, starts, outcomes, preemptions, retries."""

    __tablename__ = "job_events"
    __table_args__ = (Index(None, "job", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(63))
    at: Mapped[float] = mapped_column(Float)
    shard: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)


# --- usage (0009) ---


class UsageIntervalRow(Base):
    """One workload (a serving replica or a job's shard) on one node over ``[start, end]``
    (Unix seconds): what it reserved and what it used (see ``observe.usage``)."""

    __tablename__ = "usage_intervals"
    __table_args__ = (Index(None, "end"), Index(None, "team", "end"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    team: Mapped[str] = mapped_column(String(63))
    tier: Mapped[str] = mapped_column(String(63))
    node: Mapped[str] = mapped_column(String(63))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    endpoint: Mapped[str | None] = mapped_column(String(63))
    route: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[str | None] = mapped_column(String(200))
    replica: Mapped[int | None] = mapped_column(Integer)
    job: Mapped[str | None] = mapped_column(String(200))
    shard: Mapped[int | None] = mapped_column(Integer)
    queue_wait_s: Mapped[float | None] = mapped_column(Float)
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    gpu_fraction: Mapped[float] = mapped_column(Float)
    gpu_model: Mapped[str | None] = mapped_column(String(63))
    cpu_seconds: Mapped[float] = mapped_column(Float)
    cpu_peak_milli: Mapped[float | None] = mapped_column(Float)
    memory_peak_mib: Mapped[float] = mapped_column(Float)
    memory_mean_mib: Mapped[float | None] = mapped_column(Float)
    gpu_util: Mapped[float | None] = mapped_column(Float)
    gpu_memory_mib: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)


class UsageNodeRow(Base):
    """What one node offered over ``[start, end]`` and its price then: what a usage report
    charges the period for."""

    __tablename__ = "usage_nodes"
    __table_args__ = (Index(None, "end"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(63))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    gpu_count: Mapped[int] = mapped_column(Integer)
    gpu_model: Mapped[str | None] = mapped_column(String(63))
    cost_per_hour: Mapped[float] = mapped_column(Float)

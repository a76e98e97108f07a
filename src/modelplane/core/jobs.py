"""Shards of a job: the plan, one attempt's task, its outcome, and who runs them.

The job controller plans a job into :class:`ShardPlan` s once (before any shard runs),
then hands one :class:`ShardTask` per attempt to a :class:`ShardExecutor` (local
processes, or Ray tasks) and records the :class:`ShardOutcome` it reports. Everything
here is plain data: no I/O, so the controller and the simulator share it.

Exactly once: a shard writes ``temp_path`` and renames it to ``final_path`` only when
complete, and an attempt that finds ``final_path`` already there reports ``done`` without
running, so retries, preemptions and restarts never write a shard twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from modelplane.spec.job import Job

__all__ = [
    "SUCCESS_MARKER",
    "OutcomeStatus",
    "ShardExecutor",
    "ShardOutcome",
    "ShardPlan",
    "ShardReservation",
    "ShardTask",
    "check_stop_reason",
    "part_name",
    "plan_row_ranges",
    "shard_id",
]

SUCCESS_MARKER = "_SUCCESS"
"""File written into a batch-score output folder when every shard is done; it holds the
job's uid, so a later job can tell its own finished output from another's."""


def part_name(index: int) -> str:
    """The output file of shard ``index``: sorted by name, it is sorted by shard."""
    return f"part-{index:05d}.parquet"


def shard_id(job_uid: str, index: int) -> str:
    """A shard's id, unique across jobs: the key of its outcome and of its request ids."""
    return f"{job_uid}/{index}"


class OutcomeStatus(StrEnum):
    """How one attempt of a shard ended."""

    DONE = "done"
    """The shard's output is in place (written now, or found from an earlier attempt)."""
    FAILED = "failed"
    """The attempt raised or its process died; ``error`` says why. Retried up to the limit."""
    PREEMPTED = "preempted"
    """Stopped to free capacity for other work; retried without counting against the limit."""
    CANCELLED = "cancelled"
    """Stopped because the job was cancelled (or passed its deadline); not retried."""


def check_stop_reason(reason: OutcomeStatus) -> None:
    """Refuse a ``ShardExecutor.stop`` reason that is not a stop (done and failed are not)."""
    if reason not in (OutcomeStatus.PREEMPTED, OutcomeStatus.CANCELLED):
        raise ValueError(f"a stop is preempted or cancelled, not {reason}")


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """One shard of a job: a row range (``row_start`` inclusive, ``row_stop`` exclusive)
    of the input, or a run of Parquet row groups when sharded by row groups."""

    index: int
    row_start: int
    row_stop: int
    row_groups: tuple[int, ...] = ()
    """Parquet row groups this shard reads; empty when it reads a row range."""

    @property
    def expected_rows(self) -> int:
        return self.row_stop - self.row_start

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"shard index {self.index} is negative")
        if not 0 <= self.row_start <= self.row_stop:
            raise ValueError(f"shard {self.index}: rows [{self.row_start}, {self.row_stop})")


def plan_row_ranges(total_rows: int, rows_per_shard: int) -> tuple[ShardPlan, ...]:
    """Consecutive row ranges of ``rows_per_shard`` rows (the last may hold fewer).

    An empty input still gets one (empty) shard, so the job finishes with an empty output
    and a success marker instead of never starting.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    if total_rows <= 0:
        return (ShardPlan(0, 0, 0),)
    return tuple(
        ShardPlan(index, start, min(start + rows_per_shard, total_rows))
        for index, start in enumerate(range(0, total_rows, rows_per_shard))
    )


@dataclass(frozen=True, slots=True)
class ShardReservation:
    """What an attempt holds while it runs: the job's per-shard resources, in the
    scheduler's units (CPU millicores, MiB, milli-GPUs)."""

    cpu_milli: int
    memory_mib: int
    gpu_milli: int = 0
    gpu_model: str | None = None

    @classmethod
    def of(cls, job: Job) -> ShardReservation:
        r = job.resources
        return cls(r.cpu_milli, r.memory_mb, r.gpu_milli, r.gpu_model)


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Everything a worker needs to run one attempt of one shard, and nothing it must
    look up: the model is resolved to a directory and digest before the task exists."""

    job_name: str
    job_uid: str
    job: Job
    plan: ShardPlan
    attempt: int
    """1 for the first attempt, counting preempted and failed ones."""
    final_path: str
    """Where the finished output lives (local path or fsspec URL)."""
    temp_path: str
    """Where the attempt writes before renaming to ``final_path``; unique per attempt."""
    reservation: ShardReservation
    model_dir: str | None = None
    """The verified package folder of the pinned model or package version."""
    model_digest: str | None = None
    """That version's digest, written beside every output row."""
    model_ref: str | None = None
    """The pinned ``name:version``."""
    input_columns: tuple[str, ...] = ()
    """Columns the shard reads (the signature's inputs plus passthrough columns)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Kind-specific settings resolved by the controller (e.g. a feature store's URL)."""

    @property
    def shard_id(self) -> str:
        return shard_id(self.job_uid, self.plan.index)

    @property
    def attempt_id(self) -> str:
        """Unique per attempt: executors key running attempts by it."""
        return f"{self.shard_id}#{self.attempt}"


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    """How an attempt ended and what it used. Times are wall-clock seconds since the epoch
    (they go to the store and to cost reports); usage is measured by the executor."""

    job_uid: str
    index: int
    attempt: int
    status: OutcomeStatus
    rows: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str | None = None
    cpu_seconds: float = 0.0
    """CPU time the attempt's process used (user + system)."""
    peak_memory_mib: float = 0.0
    """Highest resident memory of the attempt's process."""
    gpu_seconds: float = 0.0
    """Reserved GPU fraction times wall seconds (no per-process GPU counters are portable)."""
    reused: bool = False
    """The final output already existed, so nothing ran (a resumed or repeated attempt)."""
    node: str | None = None
    """The node the attempt ran on, as the cluster model names it (``None``: the executor's
    own machine, the cluster's first node)."""

    @property
    def shard_id(self) -> str:
        return shard_id(self.job_uid, self.index)

    @property
    def attempt_id(self) -> str:
        return f"{self.shard_id}#{self.attempt}"

    @property
    def wall_seconds(self) -> float:
        return max(0.0, self.finished_at - self.started_at)


@runtime_checkable
class ShardExecutor(Protocol):
    """Runs shard attempts somewhere (local processes, Ray tasks) and reports how they end.

    ``start`` returns at once; outcomes are collected with ``poll`` (never blocks) or
    ``wait`` (blocks up to ``timeout`` seconds). Each started attempt yields exactly one
    outcome, including attempts that were stopped. ``stop`` preempts or cancels one attempt:
    SIGTERM (or Ray's cancel), then a kill after ``grace_s``; its outcome then says
    ``preempted`` or ``cancelled``.
    """

    def start(self, task: ShardTask) -> None:
        """Start one attempt; raises ``Conflict`` if this attempt id is already running."""
        ...

    def running(self) -> Sequence[str]:
        """Attempt ids started and not yet reported."""
        ...

    def poll(self) -> list[ShardOutcome]:
        """Outcomes of attempts that ended since the last call, without blocking."""
        ...

    def wait(self, timeout: float) -> list[ShardOutcome]:
        """Like ``poll``, but waits up to ``timeout`` seconds for at least one outcome."""
        ...

    def stop(self, attempt_id: str, *, reason: OutcomeStatus, grace_s: float = 5.0) -> None:
        """Stop a running attempt (``reason`` is ``preempted`` or ``cancelled``); a no-op
        for an attempt that already ended. Returns once the process is gone or killed."""
        ...

    def close(self) -> None:
        """Stop every running attempt (as cancelled) and release the executor."""
        ...

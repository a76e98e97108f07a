"""What the job controller asks of whoever knows a job's data: check, plan, task, finish.

The controller (control plane) may not import the executors' package (backends), so the
composition (``modelplane up``) hands it a :class:`JobPlanner`; this module is the
contract between them, plain data and a Protocol, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from modelplane.core.jobs import ShardPlan, ShardTask
from modelplane.spec.job import Job

__all__ = ["JobPlanner", "PlannedJob"]


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A checked job: its shards, the model version pinned for it, where outputs go."""

    shards: tuple[ShardPlan, ...]
    rows: int | None = None
    """Input rows in all; None when the kind of job has no row count."""
    model_ref: str | None = None
    model_digest: str | None = None
    output_url: str | None = None


class JobPlanner(Protocol):
    """Checks and plans jobs, and builds each attempt's task (see ``backends.jobs``)."""

    def plan(self, job: Job, uid: str) -> PlannedJob:
        """Every check before any shard runs (model, dataset, columns against the model's
        signature, output location), then the shards. Writes nothing; a failed check
        raises a :class:`~modelplane.errors.ModelplaneError` naming the spec field."""
        ...

    def claim(self, job: Job, uid: str, planned: PlannedJob) -> None:
        """Make the output location the job's, before its first shard starts."""
        ...

    def task(
        self, job: Job, uid: str, plan: ShardPlan, attempt: int, planned: PlannedJob
    ) -> ShardTask:
        """The task of one attempt (the model fetched and verified locally)."""
        ...

    def finish(self, job: Job, uid: str, planned: PlannedJob, rows: int) -> None:
        """Mark the output finished, once every shard is done."""
        ...

"""The job controller's planner on this machine: ``backends.jobs`` over the registry.

The composition (``modelplane up``, and ``jobs submit`` checking a job before it is
recorded) hands this to the control plane as a :class:`~modelplane.core.jobplan.JobPlanner`;
the control plane never imports the executors' package itself.
"""

from __future__ import annotations

from pathlib import Path

from modelplane.backends.jobs import (
    claim_output,
    fetch_package,
    plan_batch_score,
    resolve_model,
    shard_task,
    write_success,
)
from modelplane.backends.jobs.models import JobModel
from modelplane.core.jobplan import PlannedJob
from modelplane.core.jobs import ShardPlan, ShardTask
from modelplane.errors import InvalidSpec
from modelplane.registry.service import Registry
from modelplane.spec.job import BatchScoreJob, Job

__all__ = ["LocalJobPlanner"]


class LocalJobPlanner:
    """Plans ``batch-score`` jobs (the kind this release runs) against the registry;
    packages are fetched and verified once per digest into ``cache_dir``."""

    def __init__(self, registry: Registry, cache_dir: Path) -> None:
        self.registry = registry
        self.cache_dir = cache_dir

    def _work(self, job: Job) -> BatchScoreJob:
        if not isinstance(job.work, BatchScoreJob):
            raise InvalidSpec(
                f"work.type: '{job.work.type}' jobs do not run on this release yet;"
                " batch-score jobs do",
                details=[{"field": "work.type", "problem": "not supported yet"}],
            )
        return job.work

    def _model(self, job: Job, planned: PlannedJob | None = None) -> JobModel:
        ref = planned.model_ref if planned is not None and planned.model_ref else job.model_ref
        return resolve_model(self.registry, ref or "", field="work.model")

    def plan(self, job: Job, uid: str) -> PlannedJob:
        work = self._work(job)
        model = self._model(job)
        info, shards = plan_batch_score(work, model.manifest.signature, uid)
        return PlannedJob(shards, info.rows, model.ref, model.digest, work.output.url)

    def claim(self, job: Job, uid: str, planned: PlannedJob) -> None:
        claim_output(self._work(job).output, uid)

    def task(
        self, job: Job, uid: str, plan: ShardPlan, attempt: int, planned: PlannedJob
    ) -> ShardTask:
        model = self._model(job, planned)
        folder = fetch_package(self.registry, model, self.cache_dir)
        return shard_task(
            job, uid, plan, attempt, model_ref=model.ref, model_digest=model.digest,
            model_dir=str(folder), signature=model.manifest.signature,
        )  # fmt: skip

    def finish(self, job: Job, uid: str, planned: PlannedJob, rows: int) -> None:
        write_success(
            self._work(job).output, uid, job_name=job.name, shards=len(planned.shards),
            rows=rows, digest=planned.model_digest or "",
        )  # fmt: skip

"""Jobs on this machine: ``backends.jobs`` handed to the control plane by the composition.

:class:`LocalJobPlanner` is the job controller's :class:`~modelplane.core.jobplan.JobPlanner`
over the registry; :func:`submit_check` checks a job before ``apply`` records it;
:func:`run_jobs` is the job controller ``modelplane up`` runs, with shards as local
processes. The control plane never imports the executors' package itself. Heavy imports
(pyarrow, fsspec) wait until a job needs them, so ``up`` starts as fast as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane.errors import InvalidSpec

if TYPE_CHECKING:
    from modelplane.backends.jobs.models import JobModel
    from modelplane.controlplane.degrader import Degrader
    from modelplane.core.jobplan import PlannedJob
    from modelplane.core.jobs import ShardPlan, ShardTask
    from modelplane.registry.service import Registry
    from modelplane.spec.job import BatchScoreJob, Job

__all__ = ["LocalJobPlanner", "run_jobs", "submit_check"]


class LocalJobPlanner:
    """Plans ``batch-score`` jobs (the kind this release runs) against the registry;
    packages are fetched and verified once per digest into ``cache_dir``."""

    def __init__(self, registry: Registry, cache_dir: Path) -> None:
        self.registry = registry
        self.cache_dir = cache_dir

    def _work(self, job: Job) -> BatchScoreJob:
        from modelplane.spec.job import BatchScoreJob

        if not isinstance(job.work, BatchScoreJob):
            raise InvalidSpec(
                f"work.type: '{job.work.type}' jobs do not run on this release yet;"
                " batch-score jobs do",
                details=[{"field": "work.type", "problem": "not supported yet"}],
            )
        return job.work

    def _model(self, job: Job, planned: PlannedJob | None = None) -> JobModel:
        from modelplane.backends.jobs.models import resolve_model

        ref = planned.model_ref if planned is not None and planned.model_ref else job.model_ref
        return resolve_model(self.registry, ref or "", field="work.model")

    def plan(self, job: Job, uid: str) -> PlannedJob:
        from modelplane.backends.jobs.plan import plan_batch_score
        from modelplane.core.jobplan import PlannedJob

        work = self._work(job)
        model = self._model(job)
        info, shards = plan_batch_score(work, model.manifest.signature, uid)
        return PlannedJob(shards, info.rows, model.ref, model.digest, work.output.url)

    def claim(self, job: Job, uid: str, planned: PlannedJob) -> None:
        from modelplane.backends.jobs.plan import claim_output

        claim_output(self._work(job).output, uid)

    def task(
        self, job: Job, uid: str, plan: ShardPlan, attempt: int, planned: PlannedJob
    ) -> ShardTask:
        from modelplane.backends.jobs.models import fetch_package
        from modelplane.backends.jobs.plan import shard_task

        model = self._model(job, planned)
        folder = fetch_package(self.registry, model, self.cache_dir)
        return shard_task(
            job, uid, plan, attempt, model_ref=model.ref, model_digest=model.digest,
            model_dir=str(folder), signature=model.manifest.signature,
        )  # fmt: skip

    def finish(self, job: Job, uid: str, planned: PlannedJob, rows: int) -> None:
        from modelplane.backends.jobs.plan import write_success

        write_success(
            self._work(job).output, uid, job_name=job.name, shards=len(planned.shards),
            rows=rows, digest=planned.model_digest or "",
        )  # fmt: skip


def _cache(home: Path) -> Path:
    return home / "cache" / "packages"


def submit_check(registry: Registry, home: Path) -> Callable[[Job], None]:
    """Every check of a job (model, dataset, columns, output), before it is recorded."""
    planner = LocalJobPlanner(registry, _cache(home))

    def check(job: Job) -> None:
        planner.plan(job, "submit")

    return check


def run_jobs(
    registry: Registry, home: Path, degrader: Degrader
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """The job controller of ``modelplane up``: shards as processes of this one (they end
    with it; a restart resumes the jobs), the nodes of ``$MODELPLANE_HOME/cluster.yaml`` and
    this machine, the degrader's active steps."""

    async def run(stop: asyncio.Event) -> None:
        from modelplane.backends.jobs.local import LocalShardExecutor
        from modelplane.controlplane.jobs import JobController, degrader_effects
        from modelplane.spec.cluster import ClusterSpec
        from modelplane.system.usage import LocalCluster

        executor = LocalShardExecutor()
        nodes = LocalCluster(home / "cluster.yaml")
        controller = JobController(
            registry, executor, LocalJobPlanner(registry, _cache(home)),
            lambda: ClusterSpec(nodes=tuple(nodes())), degradation=degrader_effects(degrader),
        )  # fmt: skip
        try:
            await controller.run(stop)
        finally:
            await asyncio.to_thread(executor.close)

    return run

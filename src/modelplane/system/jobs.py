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

from modelplane.backends.jobs.planner import JobsPlanner

if TYPE_CHECKING:
    from modelplane.controlplane.degrader import Degrader
    from modelplane.registry.service import Registry
    from modelplane.spec.job import Job

__all__ = ["LocalJobPlanner", "run_jobs", "submit_check"]


class LocalJobPlanner(JobsPlanner):
    """Plans every kind of job against the registry (see :class:`~modelplane.backends.
    jobs.planner.JobsPlanner`): receipts of jobs without an output folder go under
    ``home/jobs``, materialize jobs write the online store the settings name."""

    def __init__(self, registry: Registry, cache_dir: Path, *, home: Path | None = None) -> None:
        from modelplane.settings import Settings

        settings = Settings(home=home) if home is not None else Settings()
        super().__init__(
            registry, cache_dir, state_dir=None if home is None else home / "jobs",
            feature_store_url=settings.resolved_feature_store_url(),
        )  # fmt: skip


def _cache(home: Path) -> Path:
    return home / "cache" / "packages"


def submit_check(registry: Registry, home: Path) -> Callable[[Job], None]:
    """Every check of a job (model, dataset, columns, output), before it is recorded."""
    planner = LocalJobPlanner(registry, _cache(home), home=home)

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
        from modelplane.security.sandbox import SandboxPolicy
        from modelplane.spec.cluster import ClusterSpec
        from modelplane.system.usage import LocalCluster

        # the node's policy for model code, as model workers get it: each shard running a
        # team's code has it narrowed to its package and its reserved memory
        executor = LocalShardExecutor(sandbox=SandboxPolicy())
        nodes = LocalCluster(home / "cluster.yaml")
        controller = JobController(
            registry, executor, LocalJobPlanner(registry, _cache(home), home=home),
            lambda: ClusterSpec(nodes=tuple(nodes())), degradation=degrader_effects(degrader),
        )  # fmt: skip
        try:
            await controller.run(stop)
        finally:
            await asyncio.to_thread(executor.close)

    return run

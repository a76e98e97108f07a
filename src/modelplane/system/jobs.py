"""Jobs on this machine: ``backends.jobs`` handed to the control plane by the composition.

:class:`LocalJobPlanner` is the job controller's :class:`~modelplane.core.jobplan.JobPlanner`
over the registry; :func:`submit_check` checks a job before ``apply`` records it;
:func:`run_jobs` is the job controller ``modelplane up`` runs: shards as local processes
against this machine's cluster model, or, with an execution backend (``up --backend ray``),
as Ray tasks against the Ray cluster's live nodes (:class:`BackendCapacity`). The control
plane never imports the executors' package itself. Heavy imports (pyarrow, fsspec, Ray's
executor) wait until the job controller starts, so ``up`` starts as fast as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane.backends.jobs.planner import JobsPlanner
from modelplane.spec.cluster import ClusterSpec, NodeSpec

if TYPE_CHECKING:
    from modelplane.controlplane.degrader import Degrader
    from modelplane.core.backend import BackendNode, ExecutionBackend
    from modelplane.core.jobs import ShardExecutor
    from modelplane.registry.service import Registry
    from modelplane.spec.job import Job

__all__ = ["BackendCapacity", "LocalJobPlanner", "node_spec", "run_jobs", "submit_check"]

log = logging.getLogger("modelplane.system.jobs")


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
    """Every check of a job's work (model, dataset, columns, output), before it is recorded
    (its team and tier are the applier's to check, against the policy it applies under)."""
    planner = LocalJobPlanner(registry, _cache(home), home=home)

    def check(job: Job) -> None:
        planner.plan(job, "submit")

    return check


def node_spec(node: BackendNode) -> NodeSpec | None:
    """A live backend node as the cluster model writes it (``None``: it holds no shard, or
    its name is not one the cluster model accepts)."""
    from pydantic import ValidationError

    from modelplane.spec.cluster import MAX_GPUS_PER_NODE, GPUs

    if not node.alive or node.cpu_milli < 1 or node.memory_mib < 1:
        return None
    gpus = None
    if node.gpu_count:
        count = min(node.gpu_count, MAX_GPUS_PER_NODE)
        gpus = GPUs(model=node.gpu_model, count=count, memory_mib=node.gpu_memory_mib)
    try:
        return NodeSpec(
            name=node.name, cpu_milli=node.cpu_milli, memory_mib=node.memory_mib, gpus=gpus,
            labels=dict(node.labels), cost_per_hour=node.cost_per_hour,
        )  # fmt: skip
    except ValidationError as exc:
        log.warning("node %s is left out of the jobs' capacity: %s", node.name, exc)
        return None


class BackendCapacity:
    """The backend's live nodes as the job controller's cluster (and the usage sampler's
    nodes): ``up`` runs one, its *node reader*.

    The job controller asks for its cluster from a worker thread on every pass; the backend
    answers on the event loop, each call bounded by its head link (``backends.ray_link``:
    nothing is left waiting on Ray's head). So the nodes are read here every ``interval_s``
    and the controller gets the latest answer. While the head is lost the backend reports
    its nodes dead, and the capacity is none: no shard starts until the head answers.
    """

    def __init__(self, backend: ExecutionBackend, interval_s: float = 2.0) -> None:
        self.backend = backend
        self.interval_s = interval_s
        self._spec = ClusterSpec(nodes=())

    def __call__(self) -> ClusterSpec:
        return self._spec

    async def refresh(self) -> ClusterSpec:
        nodes: Sequence[BackendNode] = await self.backend.nodes()
        specs = [spec for spec in map(node_spec, nodes) if spec is not None]
        self._spec = ClusterSpec(nodes=tuple(specs))
        return self._spec

    async def run(self, stop: asyncio.Event) -> None:
        from modelplane.controlplane.loop import every

        await every(
            stop, self.interval_s, self.refresh, log=log, what="reading the backend's nodes"
        )


def _backend_executor(
    backend: ExecutionBackend, address: str | None, artifacts: str | None
) -> ShardExecutor:
    """Shards as tasks on the backend's cluster, over the connection ``up`` already holds."""
    from modelplane.errors import MissingExtra, WorkerFailed
    from modelplane.security.sandbox import SandboxPolicy

    if backend.kind != "ray":
        raise WorkerFailed(f"jobs cannot run on the {backend.kind} backend yet")
    try:
        from modelplane.backends.jobs.ray import RayShardExecutor
    except ImportError as exc:
        raise MissingExtra("ray", "ray") from exc
    # the node's policy for model code, as local shards and Ray replicas get it
    return RayShardExecutor(address, sandbox=SandboxPolicy(), artifacts=artifacts)


def run_jobs(
    registry: Registry,
    home: Path,
    degrader: Degrader,
    *,
    capacity: BackendCapacity | None = None,
    ray_address: str | None = None,
    artifacts: str | None = None,
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """The job controller of ``modelplane up``, with the degrader's active steps.

    Without ``capacity``: shards as processes of this one (they end with it; a restart
    resumes the jobs), admitted against the nodes of ``$MODELPLANE_HOME/cluster.yaml`` and
    this machine. With the Ray backend's ``capacity`` (its live nodes, read by a loop of
    their own): shards as Ray tasks on the cluster at ``ray_address`` (the connection ``up``
    joined), admitted against those nodes; a node without a model's package folder fetches
    it from ``artifacts``.
    """

    async def run(stop: asyncio.Event) -> None:
        from modelplane.controlplane.jobs import JobController, degrader_effects

        planner = LocalJobPlanner(registry, _cache(home), home=home)
        effects = degrader_effects(degrader)
        if capacity is None:
            executor, cluster = _local(home)
            controller = JobController(registry, executor, planner, cluster,
                                       degradation=effects)  # fmt: skip
            try:
                await controller.run(stop)
            finally:
                await asyncio.to_thread(executor.close)
            return
        executor = await asyncio.to_thread(
            _backend_executor, capacity.backend, ray_address, artifacts
        )
        controller = JobController(registry, executor, planner, capacity, degradation=effects)
        try:
            await capacity.refresh()  # before the first pass: it admits against these nodes
            await controller.run(stop)
        finally:
            await asyncio.to_thread(executor.close)

    return run


def _local(home: Path) -> tuple[ShardExecutor, Callable[[], ClusterSpec]]:
    from modelplane.backends.jobs.local import LocalShardExecutor
    from modelplane.security.sandbox import SandboxPolicy
    from modelplane.system.usage import LocalCluster

    # the node's policy for model code, as model workers get it: each shard running a
    # team's code has it narrowed to its package and its reserved memory
    executor = LocalShardExecutor(sandbox=SandboxPolicy())
    nodes = LocalCluster(home / "cluster.yaml")
    return executor, lambda: ClusterSpec(nodes=tuple(nodes()))

"""Shards as Ray tasks: the same attempts as :mod:`.local`, placed by Ray across a cluster.

Each attempt is one Ray task asking for the shard's reservation (fractional CPUs, memory
in bytes, fractional GPUs, the GPU model as Ray's ``accelerator_type:<MODEL>`` resource).
Inside, the task runs the attempt exactly as the local executor does, as its own fresh,
sandboxed process on that node (:mod:`.local`), so a shard behaves the same on both
backends, and commits it there; the output URL must therefore be reachable from every node
(a shared folder, or an fsspec URL such as ``s3://``). A node that lacks the model's package
folder fetches it from the artifact store first (``artifacts``; :mod:`..packages`), as a
replica does.

Stopping an attempt cancels its task: Ray interrupts it, which stops the shard's process
(SIGTERM, then a kill after the grace), and a task still running after the grace is killed
by force (its shard process dies with it: :func:`.runner.die_with_parent`).

``modelplane up --backend ray`` runs its shards here, over the connection it joined; its
backend's head link may leave and join the cluster again (``backends.ray_link``), so this
executor never joins on its own once it runs: with no connection it starts nothing, and
attempts whose tasks belonged to a cluster connection that is gone, or to a node that died,
end as preempted (they run again without spending a retry).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, NodeDiedError, RayError, TaskCancelledError

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.backends.packages import ensure_package
from modelplane.core.jobs import OutcomeStatus, ShardOutcome, ShardTask, check_stop_reason
from modelplane.errors import Conflict, NotReady
from modelplane.security.sandbox import SandboxPolicy

__all__ = ["RayShardExecutor", "run_attempt", "task_options"]

_LONGEST_ATTEMPT_S = 7 * 24 * 3600.0
"""An attempt is bounded even without a deadline: a week, then it is cancelled."""


_GRACE_S = 5.0
"""How long a stopped shard's process has to end before it is killed, inside the task."""

_executors: dict[SandboxPolicy | None, LocalShardExecutor] = {}
"""One local executor (one warm template) per Ray worker process and sandbox policy."""


def run_attempt(
    task: ShardTask,
    sandbox: SandboxPolicy | None,
    grace_s: float = _GRACE_S,
    artifacts: str | None = None,
) -> ShardOutcome:
    """Run one attempt as a local process and wait for its outcome (inside a Ray task);
    with ``artifacts``, the package folder is fetched from there first where it is missing
    (outside the sandbox, which allows neither the network nor writes there)."""
    if artifacts and task.model_dir and task.model_digest:
        ensure_package(task.model_dir, task.model_digest, artifacts)
    executor = _executors.get(sandbox)
    if executor is None:
        executor = _executors[sandbox] = LocalShardExecutor(sandbox=sandbox)
    deadline = time.monotonic() + _LONGEST_ATTEMPT_S
    try:
        executor.start(task)
        while time.monotonic() < deadline:
            outcomes = executor.wait(1.0)
            if outcomes:
                return _on_this_node(outcomes[0])
        executor.stop(task.attempt_id, reason=OutcomeStatus.CANCELLED, grace_s=grace_s)
        return _on_this_node(executor.poll()[0])
    finally:
        # reached on Ray's cancel (KeyboardInterrupt) too: the process never outlives us
        for attempt_id in executor.running():
            executor.stop(attempt_id, reason=OutcomeStatus.CANCELLED, grace_s=grace_s)


def _on_this_node(outcome: ShardOutcome) -> ShardOutcome:
    """The outcome with the name of the Ray node it ran on, so its usage is charged there."""
    from modelplane.backends.ray_nodes import node_name

    try:
        context = ray.get_runtime_context()
        # typed as lists of values in some Ray releases, plain strings in others
        raw: dict[str, Any] = dict(context.get_node_labels())
        node_id = context.get_node_id()
    except (AttributeError, RuntimeError):  # a Ray without node labels: charged as before
        return outcome
    labels = {k: v if isinstance(v, str) else ",".join(v) for k, v in raw.items()}
    return dataclasses.replace(outcome, node=node_name(node_id, labels))


def task_options(task: ShardTask) -> dict[str, Any]:
    """The Ray resources of one attempt: the reservation the scheduler counted."""
    reservation = task.reservation
    options: dict[str, Any] = {
        "num_cpus": reservation.cpu_milli / 1000,
        "memory": reservation.memory_mib * (1 << 20),
        "max_retries": 0,  # retries are the job controller's, with its backoff and limit
        "name": f"shard-{task.attempt_id}",
    }
    if reservation.gpu_milli:
        options["num_gpus"] = reservation.gpu_milli / 1000
        if reservation.gpu_model:
            options["resources"] = {f"accelerator_type:{reservation.gpu_model}": 0.001}
    return options


@dataclass
class _Submitted:
    task: ShardTask
    ref: ray.ObjectRef[ShardOutcome]
    started_at: float
    connection: str
    """The driver job of this process's connection when the task was submitted."""
    stopped: OutcomeStatus | None = None


def _connection() -> str:
    """This process's connection to Ray: a new one (after the head was joined again) is a
    new driver job, and the tasks of the old one are not its to wait for."""
    context = ray.get_runtime_context()
    # a new head numbers its jobs from 1 again, so the driver of its first connection has
    # the old one's job id: the cluster's session tells the two apart
    named = getattr(context, "get_session_name", None)  # Ray 2.50 on
    worker: Any = ray._private.worker.global_worker
    session = named() if named else worker.node.session_name
    return f"{session}/{context.get_job_id()}"


class RayShardExecutor:
    """A :class:`~modelplane.core.jobs.ShardExecutor` over a Ray cluster.

    Connects to ``address`` unless this process is already connected (``ray.init`` with
    no dashboard: nothing here needs it, and an open one is CVE-2023-48022). ``artifacts``
    is the artifact store nodes fetch a missing package folder from (``None``: every node
    reads the folder the planner named, one machine or a shared folder).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        sandbox: SandboxPolicy | None = None,
        namespace: str = "modelplane",
        artifacts: str | None = None,
    ) -> None:
        if not ray.is_initialized():
            ray.init(
                address=address,
                namespace=namespace,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        self._sandbox = sandbox
        self._artifacts = artifacts
        # Any: Ray's stubs type a remote function by its first parameters only
        self._remote: Any = ray.remote(run_attempt)
        self._submitted: dict[str, _Submitted] = {}

    def start(self, task: ShardTask) -> None:
        if task.attempt_id in self._submitted:
            raise Conflict(f"shard attempt {task.attempt_id} is already running")
        if not ray.is_initialized():
            # a task submitted now would start a Ray of its own in this process; not the
            # shard's failure: it waits without spending one of its retries
            raise NotReady("not connected to the Ray cluster (its head is being joined again)")
        remote = self._remote.options(**task_options(task))
        ref = remote.remote(task, self._sandbox, _GRACE_S, self._artifacts)
        self._submitted[task.attempt_id] = _Submitted(task, ref, time.time(), _connection())

    def running(self) -> Sequence[str]:
        return tuple(self._submitted)

    def poll(self) -> list[ShardOutcome]:
        return self.wait(0.0)

    def wait(self, timeout: float) -> list[ShardOutcome]:
        if not self._submitted or not ray.is_initialized():
            return []  # no connection now: the head link is joining the cluster again
        now = _connection()
        old = [a for a, s in self._submitted.items() if s.connection != now]
        if old:
            return self._lost(old, "its connection to the cluster was replaced")
        refs = [s.ref for s in self._submitted.values()]
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=max(0.0, timeout))
            if ready:  # then take every other one that is ready too
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        except Exception as exc:  # Ray raises several kinds when the connection goes
            return self._lost(list(self._submitted), str(exc))
        finished = set(ready)
        outcomes = []
        for attempt_id, submitted in list(self._submitted.items()):
            if submitted.ref in finished:
                del self._submitted[attempt_id]
                outcomes.append(self._outcome(submitted))
        return outcomes

    def _lost(self, attempt_ids: Sequence[str], why: str) -> list[ShardOutcome]:
        """These attempts end as preempted (or as they were stopped): their tasks went with
        a cluster connection, which is no shard's failure, so no retry is spent. Their shards
        run again, and a finished output is kept."""
        return [_lost_outcome(self._submitted.pop(a), why) for a in attempt_ids]

    def stop(self, attempt_id: str, *, reason: OutcomeStatus, grace_s: float = 5.0) -> None:
        submitted = self._submitted.get(attempt_id)
        if submitted is None or submitted.stopped is not None:
            return
        check_stop_reason(reason)
        submitted.stopped = reason
        if not ray.is_initialized():
            return  # its task went with the connection; wait() reports it when one is back
        ray.cancel(submitted.ref, force=False)
        ready, _ = ray.wait([submitted.ref], timeout=grace_s + 1.0)
        if not ready:
            ray.cancel(submitted.ref, force=True)
            ray.wait([submitted.ref], timeout=grace_s)

    def close(self) -> None:
        for attempt_id in list(self._submitted):
            self.stop(attempt_id, reason=OutcomeStatus.CANCELLED, grace_s=2.0)
        self._submitted.clear()

    def _outcome(self, submitted: _Submitted) -> ShardOutcome:
        task = submitted.task
        try:
            outcome: ShardOutcome = ray.get(submitted.ref, timeout=30.0)
        except NodeDiedError as exc:
            # Its node went away (a preempted machine; every node of a head that restarts,
            # and they end their tasks so before the head link leaves that cluster): no
            # failure of the shard's, so it is lost as in _lost, not failed with a retry spent
            return _lost_outcome(submitted, str(exc))
        except (TaskCancelledError, RayError, GetTimeoutError) as exc:
            status = submitted.stopped or OutcomeStatus.FAILED
            error = None if submitted.stopped else f"the shard's Ray task failed: {exc}"
            return ShardOutcome(task.job_uid, task.plan.index, task.attempt, status,
                                started_at=submitted.started_at, finished_at=time.time(),
                                error=error)  # fmt: skip
        if submitted.stopped is not None and outcome.status is not OutcomeStatus.DONE:
            # the process was stopped for the controller's reason, not the task's
            return ShardOutcome(task.job_uid, task.plan.index, task.attempt, submitted.stopped,
                                started_at=outcome.started_at, finished_at=outcome.finished_at,
                                cpu_seconds=outcome.cpu_seconds,
                                peak_memory_mib=outcome.peak_memory_mib)  # fmt: skip
        return outcome


def _lost_outcome(submitted: _Submitted, why: str) -> ShardOutcome:
    """The attempt ends as preempted (or as it was stopped): its task went with its node or
    its cluster connection."""
    task = submitted.task
    return ShardOutcome(
        task.job_uid,
        task.plan.index,
        task.attempt,
        submitted.stopped or OutcomeStatus.PREEMPTED,
        started_at=submitted.started_at,
        finished_at=time.time(),
        error=None if submitted.stopped else f"the shard's Ray task was lost: {why}",
    )

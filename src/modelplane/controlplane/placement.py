"""Placement that is enforced: decide with ``core`` over the backend's live nodes, then start.

One pass (:meth:`ReplicaPlacer.reconcile`) over the replicas the control plane wants:

1. read the backend's live nodes and the replicas it runs;
2. stop what is no longer wanted, and what died (its process or its node): a lost replica
   is forgotten and becomes pending again, so this same pass places it on the nodes left;
3. rebuild the cluster snapshot from the nodes, holding what every running replica holds;
4. admit the pending ones under the policy's quotas (``core.admission``);
5. place each admitted one, highest tier first (``core.placement``); where none fits, ask
   ``core.preemption`` for victims, stop them for real, then start the preemptor there;
6. start each replica on its node through the backend; what fits nowhere stays ``pending``
   with the one-line reason.

The controller sees the backend only through ``core.backend.ExecutionBackend``: the control
plane never imports an engine. It is safe to run twice and to crash between any two steps:
everything it decides from is read back from the backend at the start of the pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from modelplane.core.admission import AdmissionSnapshot, AdmissionState, Admitted, admit
from modelplane.core.backend import (
    BackendNode,
    ExecutionBackend,
    ReplicaState,
    ReplicaStatus,
    ReplicaWant,
)
from modelplane.core.cluster import Binding, ClusterSnapshot, Demand, Running
from modelplane.core.fragmentation import TaskDistribution
from modelplane.core.placement import (
    Placement,
    PlacementRequest,
    PlacementState,
    choose_slots,
    place,
    queue_order,
)
from modelplane.core.preemption import PreemptionRequest, PreemptionState, preempt
from modelplane.errors import ModelplaneError
from modelplane.spec.policy import Policy
from modelplane.types import Clock, SystemClock

__all__ = ["Outcome", "PlacementReport", "ReplicaPlacer", "ReplicaPlacement", "snapshot_of"]

_log = logging.getLogger("modelplane.controlplane.placement")


class Outcome(StrEnum):
    """What a pass did with one replica."""

    RUNNING = "running"
    """It was running where it is and stays there."""
    STARTED = "started"
    """It was placed and started this pass."""
    PENDING = "pending"
    """It fits nowhere now (or its start failed); ``reason`` says why."""
    PREEMPTED = "preempted"
    """It was stopped to make room for a higher tier; it is pending from now on."""
    LOST = "lost"
    """It died (its process or node) and was placed again, or is pending (see its entry)."""
    STOPPED = "stopped"
    """It is no longer wanted and was stopped."""


@dataclass(frozen=True, slots=True)
class ReplicaPlacement:
    name: str
    outcome: Outcome
    node: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class PlacementReport:
    """Everything one pass did, in the order it did it."""

    entries: tuple[ReplicaPlacement, ...]
    nodes: tuple[BackendNode, ...]

    def where(self) -> dict[str, str]:
        """Replica → node, for those running after the pass."""
        placed = (Outcome.RUNNING, Outcome.STARTED)
        out: dict[str, str] = {}
        for e in self.entries:
            if e.outcome in placed and e.node is not None:
                out[e.name] = e.node
            elif e.name in out and e.outcome in (Outcome.PREEMPTED, Outcome.STOPPED):
                del out[e.name]
        return out

    def pending(self) -> dict[str, str]:
        """Replica → why it is not running, for those pending after the pass."""
        out: dict[str, str] = {}
        for e in self.entries:
            if e.outcome is Outcome.PENDING:
                out[e.name] = e.reason
            elif e.outcome in (Outcome.RUNNING, Outcome.STARTED):
                out.pop(e.name, None)
        return out


def snapshot_of(
    nodes: Sequence[BackendNode], running: Sequence[ReplicaStatus]
) -> tuple[ClusterSnapshot, list[Running]]:
    """The live nodes with every running replica's demand taken from its node.

    Built in one go (``ClusterSnapshot.bind`` copies every array per call: quadratic over
    a fleet). What the engine runs beyond a node's capacity leaves it at zero free, never
    below: placement then sees it full, which it is.
    """
    empty = ClusterSnapshot.build([n.as_cluster_node() for n in nodes])
    cpu, mem, gpu = empty.cpu_free.copy(), empty.mem_free.copy(), empty.gpu_free.copy()
    held: list[Running] = []
    for status in running:
        request = status.request
        index = empty.index.get(status.node)
        if request is None or index is None:
            continue
        demand = request.demand
        slots = tuple(request.gpu_slots)
        fits = all(s < gpu.shape[1] and gpu[index, s] >= demand.gpu_milli for s in slots)
        if not slots or not fits:
            slots = _slots_holding(gpu[index], demand)
        cpu[index] -= demand.cpu_milli
        mem[index] -= demand.memory_mib
        for slot in slots:
            gpu[index, slot] -= demand.gpu_milli
        held.append(Running(request.workload(), Binding(index, slots, demand.gpu_milli)))
    for array in (cpu, mem, gpu):
        np.maximum(array, 0, out=array)
        array.flags.writeable = False
    cluster = dataclasses.replace(empty, cpu_free=cpu, mem_free=mem, gpu_free=gpu)
    return cluster, held


def _slots_holding(free: npt.NDArray[np.int64], demand: Demand) -> tuple[int, ...]:
    """Slots to count a running replica on when the engine chose its devices itself.

    Those that still hold it, so no capacity is counted twice; when none does (the engine
    runs more than our count allows), the emptiest, which then reads as full.
    """
    if not demand.gpus:
        return ()
    if int((free >= demand.gpu_milli).sum()) >= demand.gpus:
        return choose_slots(free, demand)
    emptiest = np.argsort(-free, kind="stable")[: demand.gpus]
    return tuple(sorted(int(s) for s in emptiest))


class ReplicaPlacer:
    """Runs admission, placement and preemption over a backend's live nodes, and enforces them."""

    def __init__(
        self,
        backend: ExecutionBackend,
        policy: Policy,
        *,
        clock: Clock | None = None,
        start_timeout_s: float = 60.0,
        shapes: TaskDistribution | None = None,
    ) -> None:
        self._backend = backend
        self.policy = policy
        self._clock = clock or SystemClock()
        self._start_timeout_s = start_timeout_s
        self._shapes = shapes
        self._admission = AdmissionState()
        self._placement = PlacementState()
        self._preemption = PreemptionState()

    async def reconcile(self, wanted: Sequence[ReplicaWant]) -> PlacementReport:
        entries: list[ReplicaPlacement] = []
        by_name = {w.name: w for w in wanted}
        nodes = tuple(n for n in await self._backend.nodes() if n.alive)
        live_names = {n.name for n in nodes}
        running = await self._drop_unwanted_and_lost(by_name, live_names, entries)
        # A node that just lost replicas may be dying while the engine still calls it alive
        # (Ray needs its missed heartbeats first): place nothing there until the next pass.
        suspect = {e.node for e in entries if e.outcome is Outcome.LOST}
        usable = tuple(n for n in nodes if n.name not in suspect)
        cluster, held = snapshot_of(usable, [r for r in running if r.node not in suspect])
        pending = [w for w in wanted if w.name not in {s.name for s in running}]
        now = self._clock.monotonic()
        decision, self._admission = admit(
            AdmissionSnapshot(
                tuple(w.workload() for w in pending), tuple(Admitted(r.workload) for r in held)
            ),
            self.policy,
            now,
            self._admission,
        )
        admitted = {a.workload for a in decision.admitted}
        for a in decision.admissions:
            if not a.admitted:
                entries.append(ReplicaPlacement(a.workload, Outcome.PENDING, None, a.reason))
        order = queue_order([w.workload() for w in pending if w.name in admitted], self.policy)
        for workload in order:
            cluster, held = await self._place_one(by_name[workload.name], cluster, held, entries)
        self._preemption = self._preemption.forget(
            name
            for name in {e for a, b in self._preemption.edges for e in (a, b)}
            if name not in by_name
        )
        return PlacementReport(tuple(entries), usable)

    async def _drop_unwanted_and_lost(
        self,
        wanted: Mapping[str, ReplicaWant],
        live_nodes: set[str],
        entries: list[ReplicaPlacement],
    ) -> list[ReplicaStatus]:
        keep: list[ReplicaStatus] = []
        for status in await self._backend.replicas():
            if status.name not in wanted:
                await self._backend.stop(status.name, grace_s=5.0)
                entries.append(
                    ReplicaPlacement(status.name, Outcome.STOPPED, status.node, "unwanted")
                )
            elif status.state is ReplicaState.DEAD or status.node not in live_nodes:
                why = status.reason or f"node {status.node} is gone"
                await self._backend.stop(status.name, grace_s=0.0)
                entries.append(ReplicaPlacement(status.name, Outcome.LOST, status.node, why))
            elif status.state in (ReplicaState.READY, ReplicaState.STARTING):
                keep.append(status)
                entries.append(ReplicaPlacement(status.name, Outcome.RUNNING, status.node, ""))
        return keep

    async def _place_one(
        self,
        want: ReplicaWant,
        cluster: ClusterSnapshot,
        held: list[Running],
        entries: list[ReplicaPlacement],
    ) -> tuple[ClusterSnapshot, list[Running]]:
        now = self._clock.monotonic()
        workload = want.workload()
        request = PlacementRequest(cluster, workload, self._shapes)
        decision: Placement
        decision, self._placement = place(request, self.policy.placement, now, self._placement)
        binding, reason = decision.binding, decision.reason
        if binding is None:
            choice, self._preemption = preempt(
                PreemptionRequest(cluster, tuple(held), workload),
                self.policy,
                now,
                self._preemption,
            )
            if choice.binding is None:
                line = f"{decision.reason}; {choice.reason}"
                entries.append(ReplicaPlacement(want.name, Outcome.PENDING, None, line))
                return cluster, held
            victims = {v.name: v for v in choice.victims}
            for item in [r for r in held if r.name in victims]:
                await self._backend.stop(item.name, grace_s=5.0)
                cluster = cluster.release(item.workload.demand, item.binding)
                node = cluster.nodes[item.binding.node].name
                entries.append(
                    ReplicaPlacement(item.name, Outcome.PREEMPTED, node, victims[item.name].reason)
                )
            held = [r for r in held if r.name not in victims]
            binding, reason = choice.binding, choice.reason
        node = cluster.nodes[binding.node].name
        try:
            await self._backend.start(want.on(node, binding.gpus), self._start_timeout_s)
        except ModelplaneError as exc:
            line = f"start on {node} failed: {exc}"
            _log.warning("%s: %s", want.name, line)
            entries.append(ReplicaPlacement(want.name, Outcome.PENDING, None, line))
            return cluster, held
        entries.append(ReplicaPlacement(want.name, Outcome.STARTED, node, reason))
        return cluster.bind(workload.demand, binding), [*held, Running(workload, binding)]

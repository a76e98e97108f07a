"""What executes replicas: the ``ExecutionBackend`` protocol and the plain values it speaks.

A backend reports the nodes it has (capacity, labels, price), starts a replica of a model
version on the node the control plane chose, asking the engine for exactly the resources
placement counted, stops it, says whether it is alive and ready, and carries batches to it.
The control plane decides; the backend only does what it is told, on the node it is told, and
never chooses a node itself: a replica the named node cannot take fails to start instead of
landing elsewhere.

Two backends implement it: ``backends.local`` (this machine, one process per replica) and
``backends.ray`` (an actor per replica on a Ray cluster, pinned to its node). Nothing here does
I/O; the controller (``controlplane.placement``) takes a backend through this Protocol, so the
control plane never imports an engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy.typing as npt

from modelplane.core.cluster import GPU_MILLI, Demand, Node, Workload, WorkloadKind

__all__ = [
    "Arrays",
    "BackendNode",
    "ExecutionBackend",
    "ReplicaRequest",
    "ReplicaSpec",
    "ReplicaState",
    "ReplicaStatus",
    "ReplicaWant",
    "ray_resources",
]

Arrays = dict[str, npt.NDArray[Any]]

_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class BackendNode:
    """A node as the engine reports it now: capacity, labels, price, and whether it is up.

    ``resources`` holds the engine's custom resources (Ray's ``accelerator_type:A100``, a
    team's own ``licence:foo``), which placement does not weigh but a backend may ask for.
    """

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_model: str = ""
    gpu_count: int = 0
    gpu_memory_mib: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    cost_per_hour: float = 0.0
    alive: bool = True
    engine_id: str = ""
    """The engine's own id for the node (Ray's node id); empty for the local backend."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("node.name: a node needs a name")
        if min(self.cpu_milli, self.memory_mib, self.gpu_count, self.gpu_memory_mib) < 0:
            raise ValueError(f"node {self.name}: capacity cannot be negative")
        if self.gpu_count and not self.gpu_model:
            raise ValueError(f"node {self.name}: gpu_model is required with GPUs")

    def as_cluster_node(self) -> Node:
        """The node as placement sees it."""
        return Node(
            name=self.name,
            cpu_milli=self.cpu_milli,
            memory_mib=self.memory_mib,
            gpu_model=self.gpu_model if self.gpu_count else "",
            gpu_count=self.gpu_count,
            gpu_memory_mib=self.gpu_memory_mib,
            labels=tuple(sorted(self.labels.items())),
            cost_per_hour=self.cost_per_hour,
        )


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """How a replica gets its model: ``loader(*args, **kwargs)`` returns a loaded model.

    ``loader`` is an import path (``"package.module:function"``) and ``args`` plain values, so
    the spec crosses process and machine boundaries as data, never as pickled code.
    """

    loader: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    """Folders put first on the replica's ``sys.path`` before the import."""
    sandbox: Mapping[str, Any] | None = None
    """What the replica's process gives up before it imports the loader: a
    ``security.sandbox.SandboxPolicy`` as plain values (``backends.replica_child.policy_data``),
    already narrowed to the package; ``None``: no sandbox."""
    package: tuple[str, str, str] | None = None
    """``(folder, digest, artifact store URL)`` of the package the loader reads: a node
    where ``folder`` is missing fetches it there from the artifact store first (verified
    against ``digest``), so nodes share the artifact store, not a filesystem."""

    def __post_init__(self) -> None:
        module, sep, attr = self.loader.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"spec.loader: '{self.loader}' is not 'module:callable'")
        if self.package is not None and (
            len(self.package) != 3 or not all(isinstance(p, str) and p for p in self.package)
        ):
            raise ValueError("spec.package: (folder, digest, artifact store URL), all named")
        if self.sandbox is not None and not isinstance(self.sandbox, Mapping):
            raise ValueError("spec.sandbox: a mapping of the sandbox policy's fields, or None")


def _replica_workload(
    name: str, demand: Demand, team: str, tier: str, submitted_at: float
) -> Workload:
    # A replica weighs the same whether it is still wanted or already placed on a node.
    return Workload(
        name, demand, team=team, tier=tier, kind=WorkloadKind.REPLICA, submitted_at=submitted_at
    )


@dataclass(frozen=True, slots=True)
class ReplicaRequest:
    """Start ``name`` (unique in the backend) on ``node`` holding exactly ``demand``."""

    name: str
    node: str
    spec: ReplicaSpec
    demand: Demand
    endpoint: str = ""
    model: str = ""
    """The model version served, ``name:version``: shown by ``nodes`` and ``why``."""
    team: str = "default"
    tier: str = "standard"
    gpu_slots: tuple[int, ...] = ()
    """The GPUs placement counted (an engine that picks devices itself may differ)."""
    warmup: Arrays | None = None
    """A sample batch run once before the replica reports ready."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("replica.name: a replica needs a name")
        if not self.node:
            raise ValueError(f"replica {self.name}: node is required (placement chooses it)")
        if len(self.gpu_slots) not in (0, self.demand.gpus):
            raise ValueError(
                f"replica {self.name}: gpu_slots holds {len(self.gpu_slots)} GPUs, "
                f"demand {self.demand.gpus}"
            )

    def workload(self, submitted_at: float = 0.0) -> Workload:
        """The replica as the scheduler weighs it."""
        return _replica_workload(self.name, self.demand, self.team, self.tier, submitted_at)


@dataclass(frozen=True, slots=True)
class ReplicaWant:
    """A replica the control plane wants running, before placement gives it a node."""

    name: str
    spec: ReplicaSpec
    demand: Demand
    endpoint: str = ""
    model: str = ""
    team: str = "default"
    tier: str = "standard"
    warmup: Arrays | None = None
    submitted_at: float = 0.0
    """When it was first wanted: first come, first placed within a tier."""

    def workload(self) -> Workload:
        return _replica_workload(self.name, self.demand, self.team, self.tier, self.submitted_at)

    def on(self, node: str, gpu_slots: tuple[int, ...] = ()) -> ReplicaRequest:
        """The start request for ``node``."""
        return ReplicaRequest(
            name=self.name,
            node=node,
            spec=self.spec,
            demand=self.demand,
            endpoint=self.endpoint,
            model=self.model,
            team=self.team,
            tier=self.tier,
            gpu_slots=gpu_slots,
            warmup=self.warmup,
        )


class ReplicaState(StrEnum):
    """Where a replica is, as the engine reports it."""

    STARTING = "starting"
    """Asked for; the engine is starting it or it is loading its model."""
    READY = "ready"
    """Loaded, warmed up and answering."""
    DEAD = "dead"
    """It ended without being asked to (its process crashed, its node died)."""
    STOPPED = "stopped"
    """It was stopped on purpose."""


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica as the backend sees it now."""

    name: str
    node: str
    state: ReplicaState
    reason: str = ""
    pid: int | None = None
    request: ReplicaRequest | None = None
    """What it was started with (None for replicas found but not started by this process)."""

    @property
    def alive(self) -> bool:
        return self.state in (ReplicaState.STARTING, ReplicaState.READY)


def ray_resources(demand: Demand, gpu_model: str = "") -> dict[str, float]:
    """The Ray resources a replica asks for: the same amounts placement counted.

    CPU in cores (fractions allowed), memory in bytes, GPUs as a fraction (0.25 = 250
    milli-GPU; Ray shares one device between fractional requests), and the GPU model as
    Ray's ``accelerator_type:<MODEL>`` custom resource (a token amount, as Ray itself does).
    """
    out: dict[str, float] = {}
    if demand.cpu_milli:
        out["CPU"] = demand.cpu_milli / 1000
    if demand.memory_mib:
        out["memory"] = float(demand.memory_mib * _MIB)
    if demand.gpus:
        out["GPU"] = demand.gpus * demand.gpu_milli / GPU_MILLI
        if gpu_model:
            out[f"accelerator_type:{gpu_model}"] = 0.001
    for amount in out.values():
        if not math.isfinite(amount):
            raise ValueError("a resource amount must be finite")
    return out


@runtime_checkable
class ExecutionBackend(Protocol):
    """What runs replicas. Every call is bounded in time by the backend itself."""

    @property
    def kind(self) -> str:
        """``local`` or ``ray``."""
        ...

    async def nodes(self) -> Sequence[BackendNode]:
        """Every node the engine knows now, dead ones included (``alive`` False)."""
        ...

    async def start(self, request: ReplicaRequest, timeout_s: float) -> ReplicaStatus:
        """Start a replica on ``request.node`` and wait until it is ready or failed.

        Raises ``WorkerFailed`` when the node cannot take it or the model fails to load; a
        failed start leaves nothing running.
        """
        ...

    async def stop(self, name: str, grace_s: float) -> None:
        """Stop a replica and forget it; a no-op for one that is gone already.

        A replica that died is reported ``DEAD`` by ``replicas`` until it is stopped.
        """
        ...

    async def replicas(self) -> Sequence[ReplicaStatus]:
        """Every replica started and not stopped since, its state read from the engine."""
        ...

    async def ping(self, name: str, timeout_s: float) -> bool:
        """Liveness: does the replica answer at all within ``timeout_s``?"""
        ...

    async def predict(self, name: str, arrays: Arrays, timeout_s: float) -> Arrays:
        """Send one batch and wait for its answer (``DeadlineExceeded`` past ``timeout_s``)."""
        ...

    async def close(self) -> None:
        """Stop every replica and let go of the engine."""
        ...


def by_node(statuses: Sequence[ReplicaStatus]) -> dict[str, list[ReplicaStatus]]:
    """Live replicas grouped by node name."""
    out: dict[str, list[ReplicaStatus]] = {}
    for status in statuses:
        if status.alive:
            out.setdefault(status.node, []).append(status)
    return out


__all__ += ["by_node"]

"""What the scheduler sees: demands, workloads, bindings and an immutable cluster snapshot.

The snapshot keeps per-node free capacity in read-only numpy arrays so placement scores
every node at once (the openb trace has 1,523 nodes); changing it returns a new snapshot.
Units: CPU millicores, memory MiB, GPU milli-GPU (1000 = one device).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from modelplane.spec.cluster import ClusterSpec, NodeSpec

__all__ = [
    "GPU_MILLI",
    "Binding",
    "ClusterSnapshot",
    "Demand",
    "IntArray",
    "Node",
    "Running",
    "Workload",
    "WorkloadKind",
    "usage_of",
]

GPU_MILLI = 1000
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Demand:
    """A request: ``gpus`` devices of ``gpu_milli`` each; a share (< 1000) only with one GPU."""

    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0
    gpu_milli: int = 0
    gpu_models: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if min(self.cpu_milli, self.memory_mib, self.gpus, self.gpu_milli) < 0:
            raise ValueError("a demand cannot be negative")
        if self.gpus > 1 and self.gpu_milli != GPU_MILLI:
            raise ValueError("several GPUs are requested whole (gpu_milli=1000)")
        if self.gpu_milli > GPU_MILLI or (self.gpus == 0) != (self.gpu_milli == 0):
            raise ValueError("gpu_milli is 1..1000 with gpus >= 1, and 0 without GPUs")

    @property
    def gpu_total(self) -> int:
        """All GPU this demand holds, in milli-GPU."""
        return self.gpus * self.gpu_milli

    def vector(self, gpu_model: str | None = None) -> dict[str, int]:
        """The demand as quota resources; ``gpu/<MODEL>`` when the model is known."""
        out = {"cpu": self.cpu_milli, "memory": self.memory_mib, "gpu": self.gpu_total}
        model = gpu_model
        if model is None and len(self.gpu_models) == 1:
            model = next(iter(self.gpu_models))
        if model and self.gpu_total:
            out[f"gpu/{model}"] = self.gpu_total
        return out


class WorkloadKind(StrEnum):
    """What the scheduler places."""

    REPLICA = "replica"
    """One serving replica of an endpoint."""
    JOB = "job"
    """A batch job or one of its tasks."""


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    demand: Demand
    team: str = "default"
    tier: str = "standard"
    kind: WorkloadKind = WorkloadKind.JOB
    submitted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a workload sits: a node index and the GPU slots it holds on it."""

    node: int
    gpus: tuple[int, ...] = ()
    gpu_milli: int = 0


@dataclass(frozen=True, slots=True)
class Running:
    """A placed workload with what preemption needs to weigh it."""

    workload: Workload
    binding: Binding
    started_at: float = 0.0
    checkpointed_at: float | None = None
    borrowed: bool = False

    @property
    def name(self) -> str:
        return self.workload.name


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    cpu_milli: int
    memory_mib: int
    gpu_model: str = ""
    gpu_count: int = 0
    gpu_memory_mib: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    cost_per_hour: float = 0.0

    @classmethod
    def from_spec(cls, spec: NodeSpec) -> Node:
        gpus = spec.gpus
        return cls(
            name=spec.name,
            cpu_milli=spec.cpu_milli,
            memory_mib=spec.memory_mib,
            gpu_model=gpus.model if gpus else "",
            gpu_count=gpus.count if gpus else 0,
            gpu_memory_mib=gpus.memory_mib if gpus else 0,
            labels=tuple(sorted(spec.labels.items())),
            cost_per_hour=spec.cost_per_hour,
        )


def _frozen(array: npt.NDArray[np.int64]) -> IntArray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class ClusterSnapshot:
    """Nodes and their free capacity; GPU slots past a node's count are always 0 free."""

    nodes: tuple[Node, ...]
    models: tuple[str, ...]
    model_idx: IntArray
    cpu_cap: IntArray
    mem_cap: IntArray
    gpu_cap: IntArray
    cpu_free: IntArray
    mem_free: IntArray
    gpu_free: IntArray
    index: Mapping[str, int] = field(repr=False)

    @classmethod
    def build(cls, nodes: Sequence[Node]) -> ClusterSnapshot:
        models = ("", *sorted({n.gpu_model for n in nodes if n.gpu_count}))
        width = max([n.gpu_count for n in nodes] + [1])
        gpu_free = np.zeros((len(nodes), width), dtype=np.int64)
        for i, node in enumerate(nodes):
            gpu_free[i, : node.gpu_count] = GPU_MILLI
        cpu = np.array([n.cpu_milli for n in nodes], dtype=np.int64)
        mem = np.array([n.memory_mib for n in nodes], dtype=np.int64)
        return cls(
            nodes=tuple(nodes),
            models=models,
            model_idx=_frozen(
                np.array([models.index(n.gpu_model) if n.gpu_count else 0 for n in nodes])
            ),
            cpu_cap=_frozen(cpu),
            mem_cap=_frozen(mem.copy()),
            gpu_cap=_frozen(np.array([n.gpu_count * GPU_MILLI for n in nodes], dtype=np.int64)),
            cpu_free=_frozen(cpu.copy()),
            mem_free=_frozen(mem),
            gpu_free=_frozen(gpu_free),
            index={n.name: i for i, n in enumerate(nodes)},
        )

    @classmethod
    def from_spec(cls, spec: ClusterSpec) -> ClusterSnapshot:
        return cls.build([Node.from_spec(n) for n in spec.nodes])

    def model_ok(self, demand: Demand) -> npt.NDArray[np.bool_]:
        """Per node: does its GPU model satisfy the demand's constraint?"""
        if not demand.gpus or not demand.gpu_models:
            return np.ones(len(self.nodes), dtype=bool)
        allowed = np.array([m in demand.gpu_models for m in self.models], dtype=bool)
        return allowed[self.model_idx]

    def fits(self, demand: Demand) -> npt.NDArray[np.bool_]:
        """Per node: could the demand be placed there now?"""
        ok = (self.cpu_free >= demand.cpu_milli) & (self.mem_free >= demand.memory_mib)
        if demand.gpus:
            usable = (self.gpu_free >= demand.gpu_milli).sum(axis=1)
            ok &= (usable >= demand.gpus) & self.model_ok(demand)
        return ok

    def bind(self, demand: Demand, binding: Binding) -> ClusterSnapshot:
        """A new snapshot with ``demand`` taken from ``binding``; refuses to overcommit."""
        return self._apply(demand, binding, -1)

    def release(self, demand: Demand, binding: Binding) -> ClusterSnapshot:
        """A new snapshot with ``demand`` given back to ``binding``'s node."""
        return self._apply(demand, binding, +1)

    def _apply(self, demand: Demand, binding: Binding, sign: int) -> ClusterSnapshot:
        n = binding.node
        if len(binding.gpus) != demand.gpus:
            raise ValueError(f"binding holds {len(binding.gpus)} GPUs, demand {demand.gpus}")
        cpu, mem, gpu = self.cpu_free.copy(), self.mem_free.copy(), self.gpu_free.copy()
        cpu[n] += sign * demand.cpu_milli
        mem[n] += sign * demand.memory_mib
        for slot in binding.gpus:
            gpu[n, slot] += sign * demand.gpu_milli
        node = self.nodes[n]
        over = cpu[n] < 0 or mem[n] < 0 or gpu[n].min() < 0
        under = cpu[n] > node.cpu_milli or mem[n] > node.memory_mib or gpu[n].max() > GPU_MILLI
        if over or under or any(s >= node.gpu_count for s in binding.gpus):
            raise ValueError(f"binding on {node.name} does not fit its capacity")
        return ClusterSnapshot(
            nodes=self.nodes,
            models=self.models,
            model_idx=self.model_idx,
            cpu_cap=self.cpu_cap,
            mem_cap=self.mem_cap,
            gpu_cap=self.gpu_cap,
            cpu_free=_frozen(cpu),
            mem_free=_frozen(mem),
            gpu_free=_frozen(gpu),
            index=self.index,
        )

    @property
    def gpu_capacity(self) -> int:
        return int(self.gpu_cap.sum())

    @property
    def gpu_allocated(self) -> int:
        return self.gpu_capacity - int(self.gpu_free.sum())


def usage_of(running: Iterable[Running], key: str) -> dict[str, dict[str, int]]:
    """Resources held, grouped by ``key`` (``"team"`` or ``"tier"``)."""
    out: dict[str, dict[str, int]] = {}
    for item in running:
        group = getattr(item.workload, key)
        bucket = out.setdefault(group, {})
        for resource, amount in item.workload.demand.vector().items():
            bucket[resource] = bucket.get(resource, 0) + amount
    return out

"""GPU fragmentation measured against a distribution of task shapes (Weng et al., ATC '23).

For one node and one task shape m, the fragment F_n(m) is the free GPU capacity that m
could not use there:

- m cannot run on the node at all (CPU, memory, GPU model, or GPU count short), or m asks
  for no GPU: every free GPU milli on the node is a fragment;
- otherwise, the free capacity of each GPU that holds less than m's per-GPU request.

F_n(M) is the expectation of F_n(m) over the task mix M. Everything here is vectorised
over rows (node states) so FGD can score every candidate at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from modelplane.core.cluster import Demand, IntArray

__all__ = ["TaskDistribution", "cluster_fragmentation", "fragmentation"]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class TaskDistribution:
    """Distinct task shapes with their popularity; GPU requests grouped for speed."""

    cpu: IntArray
    mem: IntArray
    gpus: IntArray
    weight: FloatArray
    models: tuple[frozenset[str], ...]
    group: IntArray
    """Per shape, the index of its (gpus, gpu_milli) group; 0 for shapes without GPUs."""
    group_milli: IntArray
    group_count: IntArray
    _masks: dict[tuple[str, ...], BoolArray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_demands(cls, demands: Iterable[Demand]) -> TaskDistribution:
        counts = Counter(demands)
        if not counts:
            raise ValueError("a task distribution needs at least one task")
        shapes = sorted(counts, key=lambda d: (d.gpus, d.gpu_milli, d.cpu_milli, d.memory_mib))
        groups = sorted({(d.gpus, d.gpu_milli) for d in shapes if d.gpus} | {(0, 0)})
        where = {g: i for i, g in enumerate(groups)}
        total = sum(counts.values())
        return cls(
            cpu=np.array([d.cpu_milli for d in shapes], dtype=np.int64),
            mem=np.array([d.memory_mib for d in shapes], dtype=np.int64),
            gpus=np.array([d.gpus for d in shapes], dtype=np.int64),
            weight=np.array([counts[d] / total for d in shapes], dtype=np.float64),
            models=tuple(d.gpu_models for d in shapes),
            group=np.array([where[(d.gpus, d.gpu_milli)] for d in shapes], dtype=np.int64),
            group_milli=np.array([g[1] for g in groups], dtype=np.int64),
            group_count=np.array([g[0] for g in groups], dtype=np.int64),
        )

    def model_mask(self, models: tuple[str, ...]) -> BoolArray:
        """(model, shape): may a shape run on a node of that GPU model?"""
        mask = self._masks.get(models)
        if mask is None:
            mask = np.array(
                [[not allowed or model in allowed for allowed in self.models] for model in models],
                dtype=bool,
            ).reshape(len(models), len(self.models))
            self._masks[models] = mask  # a memo of a pure function of frozen fields
        return mask


def fragmentation(
    cpu_free: IntArray,
    mem_free: IntArray,
    gpu_free: IntArray,
    model_idx: IntArray,
    *,
    shapes: TaskDistribution,
    mask: BoolArray,
) -> FloatArray:
    """F_n(M) for each row, in milli-GPU."""
    total = gpu_free.sum(axis=1)
    milli = shapes.group_milli
    short = gpu_free[:, :, None] < milli[None, None, :]
    frag_by_group = (gpu_free[:, :, None] * short).sum(axis=1)
    fits_by_group = (~short).sum(axis=1) >= shapes.group_count[None, :]
    feasible = (
        (cpu_free[:, None] >= shapes.cpu[None, :])
        & (mem_free[:, None] >= shapes.mem[None, :])
        & mask[model_idx]
        & fits_by_group[:, shapes.group]
        & (shapes.gpus > 0)[None, :]
    )
    frag = np.where(feasible, frag_by_group[:, shapes.group], total[:, None])
    out: FloatArray = frag @ shapes.weight
    return out


def cluster_fragmentation(
    cpu_free: IntArray,
    mem_free: IntArray,
    gpu_free: IntArray,
    model_idx: IntArray,
    *,
    shapes: TaskDistribution,
    models: tuple[str, ...],
) -> float:
    """Sum of F_n(M) over every node, in milli-GPU."""
    mask = shapes.model_mask(models)
    return float(
        fragmentation(cpu_free, mem_free, gpu_free, model_idx, shapes=shapes, mask=mask).sum()
    )

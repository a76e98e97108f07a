"""GPU fragmentation measured against a distribution of task shapes (Weng et al., ATC '23).

For one node and one task shape m, the fragment F_n(m) is the free GPU capacity that m
could not use there:

- m cannot run on the node at all (CPU, memory, GPU model, or GPU count short), or m asks
  for no GPU: every free GPU milli on the node is a fragment;
- otherwise, the free capacity of each GPU that holds less than m's per-GPU request.

F_n(M) is the expectation of F_n(m) over the task mix M. Everything here is vectorised
over rows (node states) so FGD can score every candidate at once.

Speed (FGD scores thousands of options per decision): F_n(M) = total - sum over feasible
shapes of count x (total - fragment of its GPU group) / N. Which shapes fit a node's CPU,
memory and GPU model is a 2-D dominance count, precomputed once per task mix as a table
(model, cpu step, memory step, group) of shape counts; per row only the GPU groups (about
25) are then evaluated, from a histogram of free milli-GPU per slot. Counts are integers, so
F_n(M) x N is exact and equal states give equal scores.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from modelplane.core.cluster import GPU_MILLI, Demand, IntArray

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
    counts: IntArray
    """How many tasks of each shape were seen; ``weight`` is this over their sum."""
    _masks: dict[tuple[str, ...], BoolArray] = field(default_factory=dict, repr=False)
    _tables: dict[int, tuple[BoolArray, FloatArray]] = field(default_factory=dict, repr=False)
    memo: OrderedDict[object, object] = field(default_factory=OrderedDict, repr=False)
    """Room for callers' memos of pure functions of this mix (FGD keeps node scores here)."""

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
            counts=np.array([counts[d] for d in shapes], dtype=np.int64),
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

    @cached_property
    def cpu_steps(self) -> IntArray:
        return np.unique(self.cpu)

    @cached_property
    def mem_steps(self) -> IntArray:
        return np.unique(self.mem)

    @cached_property
    def thresholds(self) -> IntArray:
        """Distinct per-GPU requests, ascending (0 included, for shapes without GPUs)."""
        return np.unique(self.group_milli)

    @cached_property
    def total_count(self) -> float:
        return float(self.counts.sum())

    @cached_property
    def group_threshold(self) -> IntArray:
        """Per GPU group, the index of its per-GPU request in ``thresholds``."""
        return np.searchsorted(self.thresholds, self.group_milli)

    def fit_table(self, mask: BoolArray) -> FloatArray:
        """(group, model, cpu step, memory step): how many GPU tasks of the group fit.

        Entry [g, m, i, j] counts the tasks in GPU group g allowed on model m whose CPU
        request is at most the i-th smallest CPU request (0: none) and memory likewise.
        """
        memo = self._tables.get(id(mask))
        if memo is not None and memo[0] is mask:
            return memo[1]
        cpu_steps, mem_steps = self.cpu_steps, self.mem_steps
        ci = np.searchsorted(cpu_steps, self.cpu) + 1
        mj = np.searchsorted(mem_steps, self.mem) + 1
        counts = np.zeros(
            (self.group_milli.size, mask.shape[0], cpu_steps.size + 1, mem_steps.size + 1),
            dtype=np.int64,
        )
        with_gpu = self.gpus > 0
        for model in range(mask.shape[0]):
            take = mask[model] & with_gpu
            np.add.at(counts, (self.group[take], model, ci[take], mj[take]), self.counts[take])
        table: FloatArray = counts.cumsum(axis=2).cumsum(axis=3).astype(np.float64)
        # Keyed by the mask object, which model_mask keeps alive in _masks.
        self._tables[id(mask)] = (mask, table)
        return table


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
    rows, width = gpu_free.shape
    bins = shapes.thresholds.size + 1
    # Per slot, how many thresholds its free capacity reaches: it is short of the rest.
    # Arrays run (bin or group, row): sums down axis 0 vectorise across rows, where a
    # row-wise cumsum or a BLAS call (threads fighting on a busy machine) is far slower.
    reach = np.searchsorted(shapes.thresholds, gpu_free, side="right")
    flat = (reach * rows + np.arange(rows)[:, None]).ravel()
    # One pass counts both: each slot adds its free milli-GPU plus ``scale``, and no row's
    # free capacity reaches ``scale``, so quotient and remainder split slots from capacity.
    scale = width * GPU_MILLI + 1
    both = np.bincount(flat, weights=(gpu_free + scale).ravel(), minlength=rows * bins)
    short_both = both.reshape(bins, rows).cumsum(axis=0)[shapes.group_threshold]
    short_slots, frag_by_group = np.divmod(short_both, scale)
    fits_by_group = width - short_slots >= shapes.group_count[:, None]
    table = shapes.fit_table(mask)
    i = np.searchsorted(shapes.cpu_steps, cpu_free, side="right")
    j = np.searchsorted(shapes.mem_steps, mem_free, side="right")
    fitting = table[:, model_idx, i, j]
    total = gpu_free.sum(axis=1).astype(np.float64)
    # Integers far below 2**53 throughout, so float64 keeps every sum exact.
    usable = (fits_by_group * fitting * (total[None, :] - frag_by_group)).sum(axis=0)
    n = shapes.total_count
    out: FloatArray = (total * n - usable) / n
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

"""The ATC '23 artifact's accounting, so our figures and its published table compare.

After every arrival (placed or failed) it logs the GPU demand arrived so far, failed pods
included, and the GPU milli allocated. The figure at k% arrived is the mean allocation over
the logged steps whose arrived share rounds to k (Python's round, half to even, as pandas'
``apply(round)`` there); where no step rounds to k, the steps within k +- 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "ARTIFACT_NAME",
    "PUBLISHED",
    "PUBLISHED_SOURCE",
    "allocation_by_percent",
    "beside_published",
    "unallocated_at",
]

PUBLISHED: dict[str, float] = {
    "FGD": 4.77,
    "BestFit": 7.14,
    "Packing": 8.22,
    "Clustering": 8.35,
    "DotProd": 9.38,
    "Random": 13.70,
}
"""Unallocated GPU % at 100% arrived, openb default pod list, GPU-node list, seeds 42-51."""
PUBLISHED_SOURCE = (
    "hkust-adsl/kubernetes-scheduler-simulator, experiments/analysis/expected_results "
    "(ATC '23 artifact), openb_pod_list_default, tune 1.3, seeds 42-51"
)

ARTIFACT_NAME = {
    "fgd": "FGD",
    "best-fit": "BestFit",
    "packing": "Packing",
    "clustering": "Clustering",
    "dot-product": "DotProd",
    "random": "Random",
}
"""Our placement strategy -> the artifact's policy it implements (core.placement follows
the artifact's score plugins; most-allocated, our own best-fit, has no counterpart: it
scores CPU, memory and GPU against each node's own capacity)."""


def beside_published(ours: dict[str, float]) -> str:
    """One line: each of ours (strategy -> unallocated % at 100%) beside the published."""
    parts = []
    for strategy, value in ours.items():
        if (theirs := ARTIFACT_NAME.get(strategy)) is not None:
            parts.append(f"{strategy} {value:.2f} vs {theirs} {PUBLISHED[theirs]:.2f}")
    table = ", ".join(f"{name} {value:.2f}" for name, value in PUBLISHED.items())
    mine = "; ".join(parts) if parts else "no strategy of ours has a published counterpart"
    return f"unallocated GPU % at 100% arrived, ours vs published: {mine} (published: {table})"


def allocation_by_percent(
    arrived_pct: Sequence[float], allocated_pct: Sequence[float]
) -> dict[int, float]:
    """k -> mean allocated % over the steps whose arrived % rounds to k, for 0..max."""
    if not arrived_pct:
        return {}
    arrived = np.asarray(arrived_pct, dtype=np.float64)
    allocated = np.asarray(allocated_pct, dtype=np.float64)
    # np.round rounds half to even, like Python's round.
    bucket = np.round(arrived).astype(np.int64)
    out: dict[int, float] = {}
    for k in range(int(bucket.max()) + 1):
        hit = bucket == k
        if not hit.any():
            hit = (arrived >= k - 1) & (arrived <= k + 1)
            if not hit.any():
                continue
        out[k] = float(allocated[hit].mean())
    return out


def unallocated_at(curve: dict[int, float], k: int) -> float:
    """100 - the allocation at k% arrived; past the curve's end, its last point."""
    if not curve:
        return 100.0
    if k in curve:
        return 100.0 - curve[k]
    return 100.0 - curve[max(c for c in curve if c <= k)] if min(curve) <= k else 100.0

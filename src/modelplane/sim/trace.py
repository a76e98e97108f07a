"""Readers for the Alibaba ``cluster-trace-gpu-v2023`` (openb) CSVs.

The trace is research data read where it lies (``../shared/traces/`` by default), never
copied into the package. Cite: Weng et al., "Beware of Fragmentation: Scheduling
GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC '23.

The pod list has no tenant field, so teams are synthesised from a stable hash of the pod
name, and QoS maps to tiers: ``LS`` (and ``Guaranteed``) to ``critical`` or ``standard``
by the same hash, everything else to ``batch``.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from modelplane.core.cluster import GPU_MILLI, Demand, Node, Workload, WorkloadKind
from modelplane.errors import InvalidSpec, NotFound
from modelplane.types import Tier

__all__ = [
    "NODES_FILE",
    "PODS_FILE",
    "PODS_GPUSPEC33_FILE",
    "TracePod",
    "default_trace_dir",
    "read_nodes",
    "read_pods",
    "stable_bucket",
]

NODES_FILE = "alibaba-gpu-v2023-openb_node_list_all_node.csv"
PODS_FILE = "alibaba-gpu-v2023-openb_pod_list_default.csv"
PODS_GPUSPEC33_FILE = "alibaba-gpu-v2023-openb_pod_list_gpuspec33.csv"


def default_trace_dir(repo_root: Path) -> Path:
    """Where the shared traces live beside a checkout: ``<repo>/../shared/traces``."""
    return repo_root.resolve().parent / "shared" / "traces"


def stable_bucket(name: str, buckets: int, salt: str = "") -> int:
    """A hash that, unlike ``hash()``, is the same in every process and on every machine."""
    digest = hashlib.blake2b(f"{salt}{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


@dataclass(frozen=True, slots=True)
class TracePod:
    """One row of a pod list, as a workload with the trace's own fields kept."""

    workload: Workload
    qos: str
    phase: str
    created_s: float
    deleted_s: float | None


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise NotFound(f"{path}: no such trace file")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_nodes(path: Path) -> list[Node]:
    """``sn, cpu_milli, memory_mib, gpu, model`` rows as nodes."""
    nodes = []
    for line, row in enumerate(_rows(path), start=2):
        try:
            gpus = int(row["gpu"])
            nodes.append(
                Node(
                    name=row["sn"],
                    cpu_milli=int(row["cpu_milli"]),
                    memory_mib=int(row["memory_mib"]),
                    gpu_model=row["model"] if gpus else "",
                    gpu_count=gpus,
                )
            )
        except (KeyError, ValueError) as exc:
            raise InvalidSpec(f"{path}:{line}: bad node row: {exc}") from None
    return nodes


def _tier(name: str, qos: str, critical_share: float) -> str:
    if qos not in ("LS", "Guaranteed"):
        return Tier.BATCH.value
    critical = stable_bucket(name, 1000, "tier:") < int(critical_share * 1000)
    return Tier.CRITICAL.value if critical else Tier.STANDARD.value


def _demand(row: dict[str, str]) -> Demand:
    gpus = int(row["num_gpu"])
    milli = int(row["gpu_milli"]) if gpus == 1 else GPU_MILLI
    spec = row.get("gpu_spec", "")
    return Demand(
        cpu_milli=int(row["cpu_milli"]),
        memory_mib=int(row["memory_mib"]),
        gpus=gpus,
        gpu_milli=milli if gpus else 0,
        gpu_models=frozenset(m for m in spec.split("|") if m) if gpus else frozenset(),
    )


def read_pods(path: Path, *, teams: int = 8, critical_share: float = 0.25) -> list[TracePod]:
    """Pod rows as workloads; ``teams`` tenants and the LS split are synthesised by hash."""
    pods = []
    for line, row in enumerate(_rows(path), start=2):
        try:
            name, qos = row["name"], row["qos"]
            deleted = row.get("deletion_time", "")
            workload = Workload(
                name=name,
                demand=_demand(row),
                team=f"team-{stable_bucket(name, teams, 'team:')}",
                tier=_tier(name, qos, critical_share),
                kind=WorkloadKind.REPLICA if qos == "LS" else WorkloadKind.JOB,
                submitted_at=float(row["creation_time"] or 0),
            )
            pods.append(
                TracePod(
                    workload=workload,
                    qos=qos,
                    phase=row["pod_phase"],
                    created_s=workload.submitted_at,
                    deleted_s=float(deleted) if deleted else None,
                )
            )
        except (KeyError, ValueError) as exc:
            raise InvalidSpec(f"{path}:{line}: bad pod row: {exc}") from None
    return pods

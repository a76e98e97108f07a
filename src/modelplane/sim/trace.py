"""Readers for the Alibaba ``cluster-trace-gpu-v2023`` (openb) CSVs.

The trace is research data read where it lies (``../shared/traces/`` by default), never
copied into the package. Cite: Weng et al., "Beware of Fragmentation: Scheduling
GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC '23.

Files are found by the public trace's own names (``openb_pod_list_<variant>.csv``,
``openb_node_list_<list>.csv``), with or without a prefix such as ``alibaba-gpu-v2023-``.
Pod lists come in two shapes: the full one (``name, cpu_milli, memory_mib, num_gpu,
gpu_milli, gpu_spec, qos, pod_phase, creation_time, deletion_time, scheduled_time``) and the
multi-GPU variants' five columns (``name, cpu_milli, memory_mib, num_gpu, gpu_milli``: no
QoS, no times), whose pods all read as best-effort batch work without a duration.

The pod list has no tenant field, so teams are synthesised from a stable hash of the pod
name, and QoS maps to tiers: ``LS`` (and ``Guaranteed``) to ``critical`` or ``standard``
by the same hash, everything else to ``batch``.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelplane.core.cluster import GPU_MILLI, Demand, Node, Workload, WorkloadKind
from modelplane.errors import InvalidSpec, NotFound
from modelplane.types import Tier

__all__ = [
    "GPU_NODES_FILE",
    "NODES_FILE",
    "NODE_COLUMNS",
    "PODS_FILE",
    "PODS_GPUSPEC33_FILE",
    "POD_COLUMNS",
    "TracePod",
    "check_replayable",
    "default_trace_dir",
    "find_nodes_file",
    "find_pods_file",
    "read_nodes",
    "read_pods",
    "stable_bucket",
]

NODES_FILE = "alibaba-gpu-v2023-openb_node_list_all_node.csv"
"""Every node of the openb cluster, 310 of them CPU-only."""
GPU_NODES_FILE = "alibaba-gpu-v2023-openb_node_list_gpu_node.csv"
"""The 1,213 GPU nodes (6,212 GPUs): the node list of the ATC '23 artifact."""
PODS_FILE = "alibaba-gpu-v2023-openb_pod_list_default.csv"
PODS_GPUSPEC33_FILE = "alibaba-gpu-v2023-openb_pod_list_gpuspec33.csv"

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
"""The columns every pod list has; the rest (QoS, phase, times) are optional."""


def default_trace_dir(repo_root: Path) -> Path:
    """Where the shared traces live beside a checkout: ``<repo>/../shared/traces``."""
    return repo_root.resolve().parent / "shared" / "traces"


def stable_bucket(name: str, buckets: int, salt: str = "") -> int:
    """A hash that, unlike ``hash()``, is the same in every process and on every machine."""
    digest = hashlib.blake2b(f"{salt}{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def _find(folder: Path, kind: str, variant: str) -> Path:
    """``*openb_<kind>_<variant>.csv`` in ``folder``; a path to a file is taken as given."""
    given = Path(variant)
    if given.suffix == ".csv":
        path = given if given.is_absolute() or given.exists() else folder / given
        if not path.is_file():
            raise NotFound(f"{path}: no such trace file")
        return path
    if not folder.is_dir():
        raise NotFound(f"{folder}: no such trace folder")
    matches = sorted(folder.glob(f"*{kind}_{variant}.csv"))
    if len(matches) == 1:
        return matches[0]
    present = sorted(p.name for p in folder.glob(f"*{kind}_*.csv"))
    if not matches:
        listed = ", ".join(present) or "none"
        raise NotFound(f"{folder}: no {kind}_{variant}.csv (found {kind} files: {listed})")
    raise InvalidSpec(f"{folder}: several files match {kind}_{variant}.csv: {present}")


def find_pods_file(folder: Path, variant: str = "default") -> Path:
    """The pod list ``variant`` (``default``, ``gpuspec33``, ``multigpu50``...) or a CSV path.

    A folder holding a single pod list needs no variant: that list is used.
    """
    if variant == "default" and folder.is_dir():
        lists = sorted(folder.glob("*openb_pod_list_*.csv"))
        if len(lists) == 1:
            return lists[0]
    return _find(folder, "openb_pod_list", variant)


def find_nodes_file(folder: Path, nodes: str = "gpu") -> Path:
    """``gpu`` (the paper's GPU-node list), ``all`` (with CPU-only nodes) or a CSV path.

    A folder holding a single node list needs no choice: that list is used.
    """
    variant = {"gpu": "gpu_node", "all": "all_node"}.get(nodes, nodes)
    if nodes == "gpu" and folder.is_dir():
        lists = sorted(folder.glob("*openb_node_list_*.csv"))
        if len(lists) == 1:
            return lists[0]
    return _find(folder, "openb_node_list", variant)


@dataclass(frozen=True, slots=True)
class TracePod:
    """One row of a pod list, as a workload with the trace's own fields kept."""

    workload: Workload
    qos: str
    phase: str
    created_s: float
    deleted_s: float | None
    scheduled_s: float | None = None

    @property
    def duration_s(self) -> float | None:
        """How long the pod ran in the trace, where it says (scheduled to deleted)."""
        if self.deleted_s is None or self.scheduled_s is None:
            return None
        return max(self.deleted_s - self.scheduled_s, 1.0)


def _rows(path: Path, columns: Sequence[str], what: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise NotFound(f"{path}: no such trace file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            header = ",".join(reader.fieldnames or ()) or "(empty file)"
            raise InvalidSpec(
                f"{path}: not an openb {what} list: missing column(s) {', '.join(missing)} "
                f"(header: {header}; expected at least {','.join(columns)})"
            )
        rows = list(reader)
    if not rows:
        raise InvalidSpec(f"{path}: the {what} list has no rows")
    return rows


def _int(row: dict[str, str], column: str, where: str, *, minimum: int = 0) -> int:
    raw = (row.get(column) or "").strip()
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(f"{where}: {column}={raw!r} is not an integer") from None
    if value < minimum:
        raise InvalidSpec(f"{where}: {column}={value} is below {minimum}")
    return value


def read_nodes(path: Path) -> list[Node]:
    """``sn, cpu_milli, memory_mib, gpu, model`` rows as nodes; bad rows are named."""
    nodes = []
    for line, row in enumerate(_rows(path, NODE_COLUMNS, "node"), start=2):
        where = f"{path}:{line} (node {row.get('sn') or '?'})"
        gpus = _int(row, "gpu", where)
        nodes.append(
            Node(
                name=row["sn"],
                cpu_milli=_int(row, "cpu_milli", where, minimum=1),
                memory_mib=_int(row, "memory_mib", where, minimum=1),
                gpu_model=row["model"] if gpus else "",
                gpu_count=gpus,
            )
        )
    return nodes


def _tier(name: str, qos: str, critical_share: float) -> str:
    if qos not in ("LS", "Guaranteed"):
        return Tier.BATCH.value
    critical = stable_bucket(name, 1000, "tier:") < int(critical_share * 1000)
    return Tier.CRITICAL.value if critical else Tier.STANDARD.value


def _demand(row: dict[str, str], where: str) -> Demand:
    gpus = _int(row, "num_gpu", where)
    milli = _int(row, "gpu_milli", where) if gpus == 1 else GPU_MILLI
    if gpus == 1 and not 0 < milli <= GPU_MILLI:
        raise InvalidSpec(f"{where}: gpu_milli={milli} is not in 1..{GPU_MILLI} for one GPU")
    spec = row.get("gpu_spec") or ""
    return Demand(
        cpu_milli=_int(row, "cpu_milli", where),
        memory_mib=_int(row, "memory_mib", where),
        gpus=gpus,
        gpu_milli=milli if gpus else 0,
        gpu_models=frozenset(m for m in spec.split("|") if m) if gpus else frozenset(),
    )


def _seconds(row: dict[str, str], column: str, where: str) -> float | None:
    raw = (row.get(column) or "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidSpec(f"{where}: {column}={raw!r} is not a number of seconds") from None


def read_pods(path: Path, *, teams: int = 8, critical_share: float = 0.25) -> list[TracePod]:
    """Pod rows as workloads; ``teams`` tenants and the LS split are synthesised by hash."""
    pods = []
    for line, row in enumerate(_rows(path, POD_COLUMNS, "pod"), start=2):
        name = row["name"]
        where = f"{path}:{line} (pod {name or '?'})"
        qos = row.get("qos") or "BE"
        created = _seconds(row, "creation_time", where) or 0.0
        workload = Workload(
            name=name,
            demand=_demand(row, where),
            team=f"team-{stable_bucket(name, teams, 'team:')}",
            tier=_tier(name, qos, critical_share),
            kind=WorkloadKind.REPLICA if qos == "LS" else WorkloadKind.JOB,
            submitted_at=created,
        )
        pods.append(
            TracePod(
                workload=workload,
                qos=qos,
                phase=row.get("pod_phase") or "",
                created_s=created,
                deleted_s=_seconds(row, "deletion_time", where),
                scheduled_s=_seconds(row, "scheduled_time", where),
            )
        )
    return pods


def check_replayable(nodes: Sequence[Node], pods: Sequence[TracePod], source: str) -> None:
    """Refuse, before any run starts, a trace whose inflation could not fill GPUs."""
    if not any(n.gpu_count for n in nodes):
        raise InvalidSpec(f"{source}: the node list has no GPU (nothing to fill or fragment)")
    if not any(p.workload.demand.gpus for p in pods):
        raise InvalidSpec(
            f"{source}: every pod is CPU-only; the replay fills GPU capacity, so it would "
            "never reach its target (use a pod list with GPU pods)"
        )

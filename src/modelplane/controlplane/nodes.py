"""The local machine as a cluster node, beside the nodes people declare.

Capacity is what this process may really use, not what the hardware has:

- CPU: the CPUs the process may run on (``sched_getaffinity``), lowered by a cgroup CPU
  quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``) of its own cgroup or any ancestor;
- memory: ``MemTotal`` of ``/proc/meminfo``, lowered by a cgroup memory limit (v2
  ``memory.max``, v1 ``memory.limit_in_bytes``) likewise;
- GPUs: ``nvidia-smi --query-gpu=name,memory.total`` when that binary exists, else none.

Every file is read under ``root`` so tests can lay out a fake ``/proc`` and cgroup tree.
Declared nodes come from a :class:`ClusterSpec` (``$MODELPLANE_HOME/cluster.yaml`` by
default); a declared node named like the local one replaces what was detected.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from modelplane.errors import InvalidSpec
from modelplane.security.sandbox import probe as probe_sandbox
from modelplane.spec.cluster import MAX_GPUS_PER_NODE, ClusterSpec, GPUs, LocalNodeSpec, NodeSpec
from modelplane.spec.io import load_yaml
from modelplane.spec.names import NAME_PATTERN

__all__ = [
    "GpuQuery",
    "cluster_nodes",
    "cpu_millicores",
    "detect_local_node",
    "live_cluster",
    "load_cluster",
    "memory_mib",
    "node_name",
    "parse_gpus",
    "query_nvidia_smi",
    "sandbox_labels",
]

GpuQuery = Callable[[], str | None]
"""Returns ``nvidia-smi``'s CSV (``name, memory.total`` per line), or None without GPUs."""

_NVIDIA_SMI_TIMEOUT_S = 10.0
# cgroup v1 reports "no limit" as a huge page-aligned number, not as a word.
_V1_UNLIMITED = 1 << 60
_MIB = 1 << 20


def query_nvidia_smi(timeout_s: float = _NVIDIA_SMI_TIMEOUT_S) -> str | None:
    """The GPUs ``nvidia-smi`` sees, or None when it is absent, fails or hangs."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_gpus(csv: str | None) -> GPUs | None:
    """The node's GPUs from ``nvidia-smi`` CSV; a node holds one model, the most common."""
    found: list[tuple[str, int]] = []
    for line in (csv or "").splitlines():
        name, _, memory = line.rpartition(",")
        if not name.strip():
            continue
        digits = re.match(r"\s*(\d+)", memory)
        found.append((_gpu_model(name), int(digits.group(1)) if digits else 0))
    if not found:
        return None
    model, count = Counter(m for m, _ in found).most_common(1)[0]
    memories = [mib for m, mib in found if m == model]
    return GPUs(model=model, count=min(count, MAX_GPUS_PER_NODE), memory_mib=min(memories))


def _gpu_model(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``H100-80GB-HBM3``: usable in ``gpu/<MODEL>`` quotas."""
    words = name.strip().removeprefix("NVIDIA").strip()
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", words).strip("-._")
    return model[:63] or "unknown"


def _cgroup_dirs(root: Path) -> Iterator[Path]:
    """This process's cgroup v2 folder and its ancestors, innermost first."""
    base = root / "sys/fs/cgroup"
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    own = next((line[3:] for line in lines if line.startswith("0::")), "/")
    parts = [p for p in own.strip().split("/") if p and p != ".."]
    for depth in range(len(parts), -1, -1):
        yield base.joinpath(*parts[:depth])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_cpu_limit(root: Path) -> float | None:
    limits = []
    for folder in _cgroup_dirs(root):
        text = _read(folder / "cpu.max")
        if text is None:
            continue
        quota, _, period = text.partition(" ")
        if quota != "max" and period.isdigit() and int(period) > 0:
            limits.append(int(quota) / int(period))
    return min(limits, default=None)


def _v1_cpu_limit(root: Path) -> float | None:
    for name in ("cpu", "cpu,cpuacct"):
        folder = root / "sys/fs/cgroup" / name
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        # -1 is v1's "no quota"
        if quota and period and quota.isdigit() and period.isdigit() and int(period) > 0:
            return int(quota) / int(period)
    return None


def cpu_millicores(root: Path = Path("/"), cpus: int | None = None) -> int:
    """CPU this process may use, in millicores: its CPUs, lowered by any cgroup quota."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cpus = cpus or os.cpu_count() or 1
    milli = cpus * 1000
    for limit in (_v2_cpu_limit(root), _v1_cpu_limit(root)):
        if limit is not None:
            milli = min(milli, math.floor(limit * 1000))
    return max(milli, 1)


def memory_mib(root: Path = Path("/")) -> int:
    """Memory this process may use, in MiB: ``MemTotal``, lowered by any cgroup limit."""
    total: int | None = None
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    limits = [total] if total is not None else []
    for folder in _cgroup_dirs(root):
        text = _read(folder / "memory.max")
        if text and text.isdigit():
            limits.append(int(text))
    v1 = _read(root / "sys/fs/cgroup/memory/memory.limit_in_bytes")
    if v1 and v1.isdigit() and int(v1) < _V1_UNLIMITED:
        limits.append(int(v1))
    if not limits:
        raise InvalidSpec(f"cannot read the memory size from {root / 'proc/meminfo'}")
    return max(min(limits) // _MIB, 1)


def node_name(hostname: str) -> str:
    """A host name as a valid node name (lowercase, ``[a-z0-9._-]``, at most 63)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", hostname.lower())[:63].strip("-._")
    return name if NAME_PATTERN.fullmatch(name) else "local"


def sandbox_labels() -> dict[str, str]:
    """What a model worker on this node gives up (``modelplane.io/sandbox``) and what it
    cannot (``modelplane.io/sandbox-missing``, absent when nothing is)."""
    caps = probe_sandbox()
    missing = "-".join(name.replace("_", "") for name in caps.missing())
    labels = {"modelplane.io/sandbox": caps.label()}
    return labels | ({"modelplane.io/sandbox-missing": missing} if missing else {})


def detect_local_node(
    root: Path = Path("/"),
    *,
    local: LocalNodeSpec | None = None,
    cpus: int | None = None,
    gpu_query: GpuQuery = query_nvidia_smi,
    hostname: str | None = None,
    arch: str | None = None,
) -> NodeSpec:
    """This machine as a node; ``local`` adds a name, labels and a cost per hour."""
    local = local or LocalNodeSpec()
    host = hostname if hostname is not None else socket.gethostname()
    labels = {
        "modelplane.io/hostname": host,
        "modelplane.io/arch": arch if arch is not None else platform.machine(),
        "modelplane.io/os": platform.system().lower(),
        "modelplane.io/local": "true",
        **sandbox_labels(),
        **local.labels,
    }
    return NodeSpec(
        name=local.name or node_name(host),
        cpu_milli=cpu_millicores(root, cpus),
        memory_mib=memory_mib(root),
        gpus=parse_gpus(gpu_query()),
        labels=labels,
        cost_per_hour=local.cost_per_hour,
    )


def load_cluster(path: Path | None) -> ClusterSpec:
    """The declared cluster in ``path``; an empty one when there is no such file."""
    if path is None or not path.is_file():
        return ClusterSpec()
    return load_yaml(ClusterSpec, path)


def cluster_nodes(declared: ClusterSpec, local: NodeSpec | None) -> ClusterSpec:
    """The local node (unless a declared node of its name replaces it) and the declared."""
    nodes = list(declared.nodes)
    if local is not None and all(n.name != local.name for n in nodes):
        nodes.insert(0, local)
    return ClusterSpec(name=declared.name, nodes=tuple(nodes), local=declared.local)


def live_cluster(path: Path | None, root: Path = Path("/")) -> ClusterSpec:
    """The declared cluster in ``path`` with this machine detected beside it."""
    declared = load_cluster(path)
    local = detect_local_node(root, local=declared.local) if declared.local.detect else None
    return cluster_nodes(declared, local)

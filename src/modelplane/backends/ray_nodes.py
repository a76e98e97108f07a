"""Ray's view of its nodes, as modelplane nodes; and whether a cluster lets strangers in.

Ray reports each node's total resources (``CPU`` in cores, ``memory`` in bytes, ``GPU``,
custom ones such as ``accelerator_type:A100``) and labels. modelplane reads:

- the node's name from the label ``modelplane.io/node`` (else ``ray-<first 12 of its id>``);
- the GPU model from Ray's ``accelerator_type:<MODEL>`` resource (set by Ray on GPU nodes,
  or given to ``ray start --resources`` for a node Ray cannot detect);
- GPU memory per device and the price from ``modelplane.io/gpu-memory-mib`` and
  ``modelplane.io/cost-per-hour`` labels.

The exposure check is about CVE-2023-48022 ("ShadowRay"): Ray's dashboard and Jobs API run
code for anyone who reaches them, so a cluster whose dashboard listens beyond loopback
without token authentication is a way into every machine in it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelplane.core.backend import BackendNode

__all__ = [
    "COST_LABEL",
    "GPU_MEMORY_LABEL",
    "NAME_LABEL",
    "exposure_findings",
    "is_loopback",
    "node_from_ray",
    "nodes_from_ray",
]

NAME_LABEL = "modelplane.io/node"
GPU_MEMORY_LABEL = "modelplane.io/gpu-memory-mib"
COST_LABEL = "modelplane.io/cost-per-hour"
_ACCELERATOR = "accelerator_type:"
_MIB = 1 << 20
# Resources Ray adds on its own; everything else custom is reported as the node's.
_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory")


def _number(text: str | None, default: float, what: str, node: str) -> float:
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"node {node}: label {what}={text!r} is not a number") from None
    if value < 0:
        raise ValueError(f"node {node}: label {what}={text!r} is negative")
    return value


def node_name(node_id: str, labels: Mapping[str, str]) -> str:
    """A Ray node's name: its ``modelplane.io/node`` label, else ``ray-`` and its id's start."""
    return labels.get(NAME_LABEL) or f"ray-{node_id[:12]}"


def node_from_ray(raw: Mapping[str, Any]) -> BackendNode:
    """One entry of ``ray.nodes()`` as a node."""
    node_id = str(raw.get("NodeID", ""))
    labels = {str(k): str(v) for k, v in (raw.get("Labels") or {}).items()}
    resources = {str(k): float(v) for k, v in (raw.get("Resources") or {}).items()}
    name = node_name(node_id, labels)
    models = sorted(k.removeprefix(_ACCELERATOR) for k in resources if k.startswith(_ACCELERATOR))
    gpus = int(resources.get("GPU", 0.0))
    custom = {
        k: v
        for k, v in resources.items()
        if k not in _BUILTIN and not k.startswith("node:") and not k.startswith(_ACCELERATOR)
    }
    return BackendNode(
        name=name,
        cpu_milli=round(resources.get("CPU", 0.0) * 1000),
        memory_mib=int(resources.get("memory", 0.0) // _MIB),
        gpu_model=(models[0] if models else "unknown") if gpus else "",
        gpu_count=gpus,
        gpu_memory_mib=int(_number(labels.get(GPU_MEMORY_LABEL), 0, GPU_MEMORY_LABEL, name)),
        resources=custom,
        labels={k: v for k, v in labels.items() if not k.startswith("ray.io/")},
        cost_per_hour=_number(labels.get(COST_LABEL), 0.0, COST_LABEL, name),
        alive=bool(raw.get("Alive", False)),
        engine_id=node_id,
    )


def nodes_from_ray(raw: Iterable[Mapping[str, Any]]) -> list[BackendNode]:
    """Every node Ray reports; a node id seen twice (a restarted raylet) keeps the live one."""
    out: dict[str, BackendNode] = {}
    for entry in raw:
        node = node_from_ray(entry)
        kept = out.get(node.name)
        if kept is None or (node.alive and not kept.alive):
            out[node.name] = node
    return sorted(out.values(), key=lambda n: n.name)


def is_loopback(host: str) -> bool:
    """Is ``host`` (an address or ``localhost``) reachable only from this machine?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume other machines resolve it too


def exposure_findings(
    dashboard_address: str | None, token_auth: bool, gcs_address: str
) -> Sequence[str]:
    """What makes the joined cluster a way in, one line each (nothing: it is closed)."""
    out: list[str] = []
    host = (dashboard_address or "").rpartition(":")[0]
    if dashboard_address and not is_loopback(host):
        risk = "runs code for anyone who reaches it" if not token_auth else "is reachable"
        out.append(
            f"the Ray dashboard and Jobs API listen on {dashboard_address} and {risk} beyond "
            "this machine (CVE-2023-48022); bind it to 127.0.0.1 (--dashboard-host) "
            "or turn it off (--include-dashboard=false)"
        )
    if not token_auth:
        where = gcs_address.rpartition(":")[0]
        scope = "on loopback only" if is_loopback(where) else f"at {gcs_address}"
        out.append(
            f"Ray token authentication is off for the cluster {scope}: start every node "
            "with RAY_AUTH_MODE=token and a shared RAY_AUTH_TOKEN"
        )
    return out

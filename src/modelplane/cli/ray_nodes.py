"""``modelplane nodes --ray-address ADDR``: a Ray cluster's nodes as modelplane sees them,
the replicas on each (read from Ray's actor table: node, model, state, why one is dead or
waiting), and a warning when the cluster is open to strangers (its dashboard and Jobs API
beyond loopback, or no token authentication)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from modelplane.cli.output import console, emit_json, table
from modelplane.core.backend import BackendNode

__all__ = ["show_ray_nodes", "why_on_ray"]


def show_ray_nodes(address: str, as_json: bool) -> None:
    from modelplane.backends.ray import PlacedReplica, RayBackend, placed_replicas, replicas_by_node

    async def read() -> tuple[
        Sequence[BackendNode], dict[str, int], list[PlacedReplica], list[str]
    ]:
        backend = RayBackend.connect(address)
        try:
            nodes = await backend.nodes()
            return nodes, replicas_by_node(), placed_replicas(), list(backend.exposure())
        finally:
            await backend.close()

    nodes, by_node, replicas, warnings = asyncio.run(read())
    placed = Counter(by_node)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if as_json:
        emit_json(
            {
                "nodes": list(nodes),
                "replicas": dict(placed),
                "placed": replicas,
                "warnings": warnings,
            }
        )
        return
    table(
        "nodes (ray)",
        ["name", "alive", "cpu", "memory", "gpus", "cost/h", "replicas", "labels"],
        [
            (
                n.name,
                "yes" if n.alive else "no",
                f"{n.cpu_milli / 1000:g}",
                f"{n.memory_mib / 1024:.1f} GiB",
                f"{n.gpu_count} x {n.gpu_model}" if n.gpu_count else "-",
                f"{n.cost_per_hour:g}",
                str(placed.get(n.name, 0)),
                " ".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
            )
            for n in nodes
        ],
    )
    if replicas:
        table(
            "replicas (ray)",
            ["name", "node", "model", "endpoint", "state", "reason"],
            [(r.name, r.node, r.model, r.endpoint, r.state, r.reason) for r in replicas],
        )
    if not warnings:
        console.print(
            "the cluster is closed: token authentication on, no dashboard beyond loopback"
        )


def why_on_ray(address: str, workload: str, as_json: bool) -> bool:
    """Where a replica (by name) or an endpoint's replicas run, as Ray holds them now;
    False when Ray holds none of that name (the caller explains it otherwise)."""
    from modelplane.backends.ray import RayBackend, placed_replicas

    async def read() -> list[Any]:
        backend = RayBackend.connect(address)
        try:
            return [r for r in placed_replicas() if workload in (r.name, r.endpoint)]
        finally:
            await backend.close()

    found = asyncio.run(read())
    if not found:
        return False
    lines = [
        f"replica {r.name} ({r.model or '?'}) is {r.state} on {r.node}"
        + (f": {r.reason}" if r.reason else "")
        for r in found
    ]
    if as_json:
        emit_json({"line": "; ".join(lines), "replicas": found})
    else:
        for line in lines:
            console.print(line, markup=False)
    return True

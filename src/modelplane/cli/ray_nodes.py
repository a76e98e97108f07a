"""``modelplane nodes --ray-address ADDR``: a Ray cluster's nodes as modelplane sees them,
the replicas on each (read from Ray's actor table), and a warning when the cluster is open
to strangers (its dashboard and Jobs API beyond loopback, or no token authentication)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Sequence

from modelplane.cli.output import console, emit_json, table
from modelplane.core.backend import BackendNode

__all__ = ["show_ray_nodes"]


def show_ray_nodes(address: str, as_json: bool) -> None:
    from modelplane.backends.ray import RayBackend, replicas_by_node

    async def read() -> tuple[Sequence[BackendNode], dict[str, int], list[str]]:
        backend = RayBackend.connect(address)
        try:
            return await backend.nodes(), replicas_by_node(), list(backend.exposure())
        finally:
            await backend.close()

    nodes, by_node, warnings = asyncio.run(read())
    placed = Counter(by_node)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if as_json:
        emit_json({"nodes": list(nodes), "replicas": dict(placed), "warnings": warnings})
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
    if not warnings:
        console.print(
            "the cluster is closed: token authentication on, no dashboard beyond loopback"
        )

"""A real multi-node Ray cluster on loopback for one test module, closed to strangers.

Every node is a real raylet on 127.0.0.1 with its own CPUs and memory; optional fake GPUs
are announced as Ray announces real ones (``num_gpus`` plus ``accelerator_type:<MODEL>``).
No dashboard runs, so no Jobs API listens (CVE-2023-48022), and every port is bound to
127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Node", "RayCluster", "ray_cluster"]

_GIB = 1 << 30


@dataclass(frozen=True)
class Node:
    """One node's shape."""

    cpus: float = 1.0
    memory_gib: float = 1.0
    gpus: int = 0
    gpu_model: str = ""

    def args(self) -> dict[str, Any]:
        return {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "memory": int(self.memory_gib * _GIB),
            "resources": {f"accelerator_type:{self.gpu_model}": 1.0} if self.gpu_model else {},
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "object_store_memory": 80 * (1 << 20),
        }


@dataclass
class RayCluster:
    cluster: Any
    address: str
    nodes: list[Any]

    def node_ids(self) -> set[str]:
        return {node.node_id for node in self.nodes}


@contextmanager
def ray_cluster(head: Node, others: Sequence[Node] = ()) -> Iterator[RayCluster]:
    """Start the nodes, connect this process, and tear both down afterwards."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # ray.init turns 127.0.0.1 into this machine's outward address unless it believes it
    # runs on one machine; every node here is on loopback, so say so.
    ray_constants.ENABLE_RAY_CLUSTER = False
    cluster = Cluster(initialize_head=True, head_node_args=head.args())
    try:
        started = RayCluster(cluster, cluster.address, [cluster.head_node])
        started.nodes += [cluster.add_node(**node.args()) for node in others]
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            namespace="modelplane-tests",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        yield started
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]

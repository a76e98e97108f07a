"""A real multi-node Ray cluster on this machine, closed to strangers, for one test module.

Every node is a real raylet on 127.0.0.1 with its own CPU, memory, fake GPUs (``num_gpus``
plus ``accelerator_type:<MODEL>``, as Ray reports a real one) and a ``modelplane.io/node``
label naming it. The cluster runs with Ray's token authentication (``RAY_AUTH_MODE=token``,
a fresh token per cluster) and no dashboard, so no Jobs API listens at all (CVE-2023-48022).

Beside ``tests/kit/ray.py`` (the jobs' cluster) because placement needs what that one does not
give: nodes named by label (placement speaks node names), token authentication, the token
itself (for a CLI subprocess to join) and killing one node by name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeShape", "RayTestCluster", "ray_test_cluster"]

_GIB = 1 << 30


@dataclass(frozen=True)
class NodeShape:
    name: str
    cpus: float
    memory_gib: float = 1.0
    gpus: int = 0
    gpu_model: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def args(self) -> dict[str, Any]:
        resources = {f"accelerator_type:{self.gpu_model}": 1.0} if self.gpus else {}
        return {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "memory": int(self.memory_gib * _GIB),
            "resources": resources,
            "labels": {"modelplane.io/node": self.name, **self.labels},
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "object_store_memory": 80 * (1 << 20),
        }


@dataclass
class RayTestCluster:
    cluster: Any
    address: str
    token: str
    nodes: dict[str, Any]

    def kill_node(self, name: str) -> None:
        """Kill a node's raylet and everything on it, as a machine that dies."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def add_node(self, shape: NodeShape) -> None:
        self.nodes[shape.name] = self.cluster.add_node(**shape.args())


@contextmanager
def ray_test_cluster(head: NodeShape, others: Sequence[NodeShape]) -> Iterator[RayTestCluster]:
    """Start the cluster, connect this process to it, and tear both down after."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    token = secrets.token_hex(32)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    import ray
    from ray._private import ray_constants
    from ray._private.authentication_test_utils import reset_auth_token_state
    from ray.cluster_utils import Cluster

    # Ray caches the mode and token when it is first imported (maybe by an earlier test)
    reset_auth_token_state()

    # ray.init turns 127.0.0.1 into this machine's outward address unless Ray thinks it is
    # a single-machine platform; every node here is on loopback, so tell it so.
    ray_constants.ENABLE_RAY_CLUSTER = False
    cluster = Cluster(initialize_head=True, head_node_args=head.args())
    try:
        test = RayTestCluster(cluster, cluster.address, token, {head.name: cluster.head_node})
        for shape in others:
            test.add_node(shape)
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            namespace="modelplane",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        yield test
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_auth_token_state()

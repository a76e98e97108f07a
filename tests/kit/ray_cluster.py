"""A real multi-node Ray cluster on this machine, closed to strangers, for one test module.

Every node is a real raylet on 127.0.0.1 with its own CPUs, memory, optional fake GPUs
(``num_gpus`` plus ``accelerator_type:<MODEL>``, as Ray announces a real one) and a
``modelplane.io/node`` label naming it (placement speaks node names). No dashboard runs, so
no Jobs API listens at all (CVE-2023-48022). Where the installed Ray has token
authentication (2.52 and later) the cluster runs with it, with a fresh token per cluster.

How the token reaches every process: Ray reads ``RAY_AUTH_MODE`` and ``RAY_AUTH_TOKEN`` from
the environment. The raylets are started from this process after both are set, and each
raylet starts its worker processes (actors, and the Ray tasks of jobs) with its own
environment, so they inherit the token; a CLI subprocess that joins gets it from
:meth:`RayTestCluster.join_env`. This process itself caches the mode and the token the first
time Ray reads them (maybe for an earlier module's cluster, in the same pytest run), so the
cache is dropped before each cluster starts and again after it stops.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeShape", "RayTestCluster", "ray_test_cluster", "token_auth_supported"]

_GIB = 1 << 30
_AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@dataclass(frozen=True)
class NodeShape:
    """One node: its name (the ``modelplane.io/node`` label) and what it announces."""

    name: str
    cpus: float = 1.0
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
    token: str | None
    """None where the installed Ray has no token authentication."""
    nodes: dict[str, Any]

    def kill_node(self, name: str) -> None:
        """Kill a node's raylet and everything on it, as a machine that dies."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def add_node(self, shape: NodeShape) -> None:
        self.nodes[shape.name] = self.cluster.add_node(**shape.args())

    def node_ids(self) -> set[str]:
        """Ray's ids of the nodes still running."""
        return {node.node_id for node in self.nodes.values()}

    def listening_hosts(self) -> set[str]:
        """The addresses that the cluster's processes (and their children) listen on."""
        import psutil

        processes: list[psutil.Process] = []
        for node in self.nodes.values():
            for infos in node.all_processes.values():
                for info in infos:
                    try:
                        process = psutil.Process(info.process.pid)
                        processes += [process, *process.children(recursive=True)]
                    except psutil.NoSuchProcess:
                        continue
        hosts = set()
        for process in processes:
            try:
                connections = process.net_connections(kind="inet")
            except psutil.NoSuchProcess:  # a worker that ended while we looked
                continue
            hosts |= {
                c.laddr.ip.removeprefix("::ffff:")
                for c in connections
                if c.status == psutil.CONN_LISTEN
            }
        return hosts

    def join_env(self, token: str | None = None) -> dict[str, str]:
        """What a subprocess needs in its environment to join (``token`` replaces ours)."""
        env = {
            # every node is on loopback: keep Ray from swapping 127.0.0.1 for this
            # machine's outward address
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        if self.token is not None:
            env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or self.token}
        return env


def _auth_reset() -> Callable[[], None] | None:
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:  # Ray before 2.52: no token authentication
        return None
    return reset_auth_token_state


def token_auth_supported() -> bool:
    """Whether the installed Ray can run a token-authenticated cluster."""
    return _auth_reset() is not None


@contextmanager
def ray_test_cluster(
    head: NodeShape, others: Sequence[NodeShape] = (), *, namespace: str = "modelplane"
) -> Iterator[RayTestCluster]:
    """Start the cluster, connect this process to it, and tear both down after."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # a connection left by an earlier test holds the old token and would be reused by
    # every ray.init here
    ray.shutdown()
    reset_auth = _auth_reset()
    saved = {name: os.environ.get(name) for name in _AUTH_VARIABLES}
    token = secrets.token_hex(32) if reset_auth is not None else None
    if token is not None:
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = token
    if reset_auth is not None:
        reset_auth()

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
            namespace=namespace,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        yield test
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if reset_auth is not None:
            reset_auth()

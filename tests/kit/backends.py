"""Where a test gateway's replicas run, so one data-plane suite runs on every backend.

``replica_pools(kind)`` gives what ``GatewayConfig(pools=...)`` takes:

- ``workers``: ``None``, the gateway's own worker processes (the local backend of ``up``);
- ``backend``: a :class:`BackendFleet` over ``backends.local`` (a spawned process a replica,
  behind the same socket framing and placement as a remote one);
- ``ray``: a :class:`BackendFleet` over a real Ray cluster on loopback (token authentication,
  no dashboard), an actor a replica pinned to the node modelplane chose.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from modelplane.core.backend import BackendNode
from modelplane.dataplane.pool import PoolFactory
from modelplane.spec.policy import Policy

__all__ = ["BACKENDS", "replica_pools"]

BACKENDS = (
    "workers",
    "backend",
    pytest.param("ray", marks=pytest.mark.xdist_group("ray")),
)
"""Parameters for a fixture that runs a suite on each backend (Ray's grouped on one worker)."""


@contextmanager
def replica_pools(kind: str) -> Iterator[PoolFactory | None]:
    if kind == "workers":
        yield None
        return
    from modelplane.system.backend_pool import BackendFleet

    if kind == "backend":
        from modelplane.backends.local import LocalBackend

        local = LocalBackend(BackendNode("box", cpu_milli=64_000, memory_mib=64 * 1024))
        yield BackendFleet(local, Policy, start_timeout_s=60).pool
        return
    assert kind == "ray", kind
    pytest.importorskip("ray")
    from tests.kit.ray_cluster import NodeShape, ray_test_cluster

    from modelplane.backends.ray import RayBackend

    with ray_test_cluster(NodeShape("head", 16, memory_gib=16)):
        yield BackendFleet(RayBackend(), Policy, start_timeout_s=90).pool

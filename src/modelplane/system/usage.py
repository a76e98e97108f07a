"""The usage sampler of the live system: the gateway's replicas and the cluster model's
nodes, read at the settings' cadence."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelplane.controlplane.usage import UsageSampler
    from modelplane.dataplane.gateway import Gateway
    from modelplane.settings import Settings
    from modelplane.spec.cluster import ClusterSpec, NodeSpec

__all__ = ["BackendCluster", "LocalCluster", "usage_sampler"]


class LocalCluster:
    """The cluster model's nodes for the sampler: this machine first, detected at the first
    call (the probe runs ``nvidia-smi`` and the sandbox checks, so the sampler calls it from
    a worker thread), then the declared nodes; ``cluster.yaml`` is re-read at every call, so
    an edited price counts from the next interval."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.local: NodeSpec | None = None
        self._detected = False

    @property
    def gpu_model(self) -> str | None:
        gpus = self.local.gpus if self.local is not None else None
        return None if gpus is None else gpus.model

    def __call__(self) -> Sequence[NodeSpec]:
        from modelplane.controlplane.nodes import cluster_nodes, detect_local_node, load_cluster

        declared = load_cluster(self.path)
        if not self._detected:
            self.local = detect_local_node(local=declared.local) if declared.local.detect else None
            self._detected = True
        local = self.local
        if local is not None:
            local = local.model_copy(update={"cost_per_hour": declared.local.cost_per_hour})
        nodes = list(cluster_nodes(declared, local).nodes)
        # The local node first: the sampler's replicas run there.
        nodes.sort(key=lambda n: local is None or n.name != local.name)
        return nodes


class BackendCluster:
    """The nodes an execution backend runs replicas and shards on, as the sampler prices
    them: the backend's live nodes (read elsewhere, on the event loop: ``live``), each at
    the price its ``modelplane.io/cost-per-hour`` label gives, or, without one, the price
    ``cluster.yaml`` declares for a node of that name. This machine is not one of them
    unless the backend runs work on it (it then is one of the backend's nodes)."""

    def __init__(self, declared: LocalCluster, live: Callable[[], ClusterSpec]) -> None:
        self.declared = declared
        self.live = live
        self._last: tuple[NodeSpec, ...] = ()

    def __call__(self) -> Sequence[NodeSpec]:
        # while the head cannot be read every node reads dead: the nodes last seen still
        # offered what they did, and the replicas charged to them still ran there
        live = self._last = self.live().nodes or self._last
        if not live:
            return ()
        prices = {n.name: n.cost_per_hour for n in self.declared()}
        return [
            node if node.cost_per_hour or node.name not in prices
            else node.model_copy(update={"cost_per_hour": prices[node.name]})
            for node in live
        ]  # fmt: skip


def usage_sampler(
    engine: Engine,
    gateway: Gateway,
    settings: Settings,
    backend_nodes: Callable[[], ClusterSpec] | None = None,
) -> UsageSampler:
    """The sampler the live system runs, at the settings' cadence; with ``backend_nodes``
    (an execution backend's live nodes), intervals and prices are those nodes'."""
    from modelplane.controlplane.usage import UsageSampler
    from modelplane.system.gateway_views import GatewayReplicas

    local = LocalCluster(settings.home / "cluster.yaml")
    cluster = local if backend_nodes is None else BackendCluster(local, backend_nodes)
    return UsageSampler(
        engine,
        GatewayReplicas(gateway, local),
        cluster,
        sample_s=settings.usage_sample_s,
        flush_s=max(settings.usage_flush_s, settings.usage_sample_s),
    )

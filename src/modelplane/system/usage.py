"""The usage sampler of the live system: the gateway's replicas and the cluster model's
nodes, read at the settings' cadence."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelplane.controlplane.usage import UsageSampler
    from modelplane.dataplane.gateway import Gateway
    from modelplane.settings import Settings
    from modelplane.spec.cluster import NodeSpec

__all__ = ["LocalCluster", "usage_sampler"]


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


def usage_sampler(engine: Engine, gateway: Gateway, settings: Settings) -> UsageSampler:
    """The sampler the live system runs, at the settings' cadence."""
    from modelplane.controlplane.usage import UsageSampler
    from modelplane.system.gateway_views import GatewayReplicas

    cluster = LocalCluster(settings.home / "cluster.yaml")
    return UsageSampler(
        engine,
        GatewayReplicas(gateway, cluster),
        cluster,
        sample_s=settings.usage_sample_s,
        flush_s=max(settings.usage_flush_s, settings.usage_sample_s),
    )

"""The gateway and the cluster model as the usage sampler reads them (inside ``up``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane.controlplane.usage import ReplicaSlot

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelplane.controlplane.usage import UsageSampler
    from modelplane.dataplane.endpoint_runtime import ModelVersionRuntime
    from modelplane.dataplane.gateway import Gateway
    from modelplane.settings import Settings
    from modelplane.spec.cluster import NodeSpec

__all__ = ["GatewayReplicas", "LocalCluster", "usage_sampler"]


class GatewayReplicas:
    """Adapts the gateway to the sampler's ``ReplicaSource``: every worker of every model
    version an endpoint reaches, by its routes or its shadows (each version once)."""

    def __init__(self, gateway: Gateway, cluster: LocalCluster | None = None) -> None:
        self.gateway = gateway
        self.cluster = cluster

    def replicas(self) -> list[ReplicaSlot]:
        slots: list[ReplicaSlot] = []
        for name, runtime in list(self.gateway.handler.endpoints.items()):
            refs = {id(r.target): r.ref for r in runtime.routes}
            for shadow in runtime.shadows:
                refs.setdefault(id(shadow.target), f"shadow:{shadow.ref}")
            for target in runtime.targets:
                slots += self._slots(name, refs[id(target)], target, runtime.endpoint.team,
                                     runtime.endpoint.tier)  # fmt: skip
        return slots

    def _slots(
        self, endpoint: str, route: str, target: ModelVersionRuntime, team: str, tier: str
    ) -> list[ReplicaSlot]:
        resources = target.source.manifest.resources
        gpu_model = self.cluster.gpu_model if self.cluster is not None else None
        return [
            ReplicaSlot(
                endpoint=endpoint,
                route=route,
                version=target.label,
                replica=info.index,
                pid=info.pid,
                team=team,
                tier=tier,
                cpu_milli=max(1, round(resources.cpu * 1000)),
                memory_mib=resources.memory_mb,
                gpu_fraction=resources.gpus,
                gpu_model=gpu_model if resources.gpus > 0 else None,
            )
            for info in target.pool.replicas()
        ]


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
    """The sampler ``up`` runs, at the settings' cadence."""
    from modelplane.controlplane.usage import UsageSampler

    cluster = LocalCluster(settings.home / "cluster.yaml")
    return UsageSampler(
        engine,
        GatewayReplicas(gateway, cluster),
        cluster,
        sample_s=settings.usage_sample_s,
        flush_s=max(settings.usage_flush_s, settings.usage_sample_s),
    )

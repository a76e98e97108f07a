"""``why``, live: the scheduler's view of the served endpoints over the cluster's nodes.

Each endpoint's replicas are workloads of its team and tier, one per route and replica
(``fraud-score/fraud@champion/0``); a replica asks for what its model's manifest declares
(``resources``), or :data:`DEFAULT_DEMAND` when the model cannot be read. One scheduling
cycle (``core.why.replay``: admission, placement, preemption under the applied policy) over
the nodes says where each would go or why it waits; the endpoint's ``Ready`` condition
says whether it is in fact serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelplane.core.cluster import GPU_MILLI, ClusterSnapshot, Demand, Workload, WorkloadKind
from modelplane.core.preemption import Preemption
from modelplane.core.why import Decision, Replay, replay, why
from modelplane.errors import ModelplaneError, NotFound
from modelplane.registry.service import Registry
from modelplane.spec.cluster import ClusterSpec
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.manifest import Resources
from modelplane.spec.policy import Policy
from modelplane.store.resources import Resource, ResourceStore

__all__ = [
    "DEFAULT_DEMAND",
    "Explanation",
    "applied_policy",
    "demand_of",
    "endpoint_workloads",
    "explain",
]

DEFAULT_DEMAND = Demand(cpu_milli=1000, memory_mib=512)
"""What a replica asks for when its model's manifest cannot be read (the manifest default)."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """The one line, and what it was decided from."""

    line: str
    workloads: tuple[Workload, ...]
    decisions: tuple[Decision, ...]
    serving: dict[str, Any] = field(default_factory=dict)


def demand_of(resources: Resources) -> Demand:
    """A manifest's request as a scheduler demand; more than one GPU is asked for whole."""
    gpus, milli = 0, 0
    if resources.gpus > 0:
        gpus = math.ceil(resources.gpus)
        milli = GPU_MILLI if gpus > 1 else max(1, round(resources.gpus * GPU_MILLI))
    return Demand(
        cpu_milli=max(1, round(resources.cpu * 1000)),
        memory_mib=resources.memory_mb,
        gpus=gpus,
        gpu_milli=milli,
        gpu_models=frozenset(resources.gpu_models),
    )


def applied_policy(store: ResourceStore) -> Policy:
    """The ``default`` policy, else the first applied, else the built-in defaults."""
    found = store.list("Policy")
    chosen = next((r for r in found if r.name == "default"), found[0] if found else None)
    return Policy() if chosen is None else Policy.model_validate(chosen.spec)


def _route_demand(registry: Registry, resource: Resource, model: str) -> Demand:
    pinned = Endpoint.model_validate(resource.spec).pinned(model)
    try:
        return demand_of(registry.get(pinned).manifest.resources)
    except ModelplaneError:
        return DEFAULT_DEMAND


def endpoint_workloads(registry: Registry, store: ResourceStore) -> list[Workload]:
    """One workload per replica of every route of every endpoint."""
    out: list[Workload] = []
    for resource in store.list("Endpoint"):
        endpoint = Endpoint.model_validate(resource.spec)
        submitted = resource.updated_at.timestamp()
        for route in endpoint.routes:
            demand = _route_demand(registry, resource, route.model)
            out += [
                Workload(
                    f"{endpoint.name}/{route.model}/{i}",
                    demand,
                    team=endpoint.team,
                    tier=endpoint.tier,
                    kind=WorkloadKind.REPLICA,
                    submitted_at=submitted,
                )
                for i in range(endpoint.replicas)
            ]
    return out


def _serving(store: ResourceStore, endpoint: str) -> dict[str, Any]:
    try:
        status = store.get("Endpoint", endpoint).status or {}
    except NotFound:
        return {}
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
    return {"ready": ready, "replicas": status.get("replicas")}


def _summary(endpoint: str, names: list[str], result: Replay, serving: dict[str, Any]) -> str:
    placed = {r.name: r.binding.node for r in result.running}
    waiting = [n for n in names if n not in placed]
    if waiting:
        line = why(waiting[0], result.decisions)
        if len(names) > 1:
            line += f" ({len(waiting)} of {len(names)} replicas wait)"
    else:
        nodes = [result.cluster.nodes[placed[n]].name for n in names]
        where = ", ".join(f"{node} ({nodes.count(node)})" for node in dict.fromkeys(nodes))
        line = f"{endpoint}: {len(names)} replica(s) placed on {where}"
    ready = serving.get("ready")
    if ready:
        state = "Ready" if ready.get("status") == "True" else "not Ready"
        line += f"; endpoint {state}: {ready.get('reason')}"
    return line


def explain(registry: Registry, cluster: ClusterSpec, name: str, now: float) -> Explanation:
    """Why ``name`` (an endpoint, or one replica ``endpoint/route/i``) is where it is."""
    store = ResourceStore(registry.engine)
    workloads = endpoint_workloads(registry, store)
    result = replay(workloads, ClusterSnapshot.from_spec(cluster), applied_policy(store), now)
    endpoint = name.split("/", 1)[0]
    names = [w.name for w in workloads if w.name.split("/", 1)[0] == name]
    serving = _serving(store, endpoint)
    if names:
        line = _summary(name, names, result, serving)
        mine = set(names)
    elif any(w.name == name for w in workloads):
        line, mine = why(name, result.decisions), {name}
    else:
        raise NotFound(f"no endpoint or replica named '{name}'")
    return Explanation(
        line,
        tuple(w for w in workloads if w.name in mine),
        tuple(d for d in result.decisions if _about(d, mine)),
        serving,
    )


def _about(decision: Decision, names: set[str]) -> bool:
    if isinstance(decision, Preemption):
        return decision.preemptor in names or any(v.name in names for v in decision.victims)
    return decision.workload in names

"""Preemption: which running workloads to evict so a pending one fits.

Victims are ranked by tier (lowest priority first), then borrowed capacity (work running on
quota borrowed from the cohort goes before work within its team's nominal), then least work
lost (seconds since the last checkpoint x size). Three rules are never broken:

- a ``critical`` workload, or one of a non-preemptible tier, is never a victim;
- no eviction takes a tier's or team's holding below a declared floor;
- no cycles: a workload never evicts one that (directly or through others) evicted it.

A victim must rank strictly below the preemptor, or be borrowing while the preemptor is not
(reclaim), at no higher priority.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modelplane.core.cluster import (
    GPU_MILLI,
    Binding,
    ClusterSnapshot,
    IntArray,
    Running,
    Workload,
)
from modelplane.core.placement import choose_slots
from modelplane.spec.policy import Floor, Policy
from modelplane.types import Tier

__all__ = [
    "Preemption",
    "PreemptionRequest",
    "PreemptionState",
    "Victim",
    "floor_holdings",
    "preempt",
    "work_lost",
]


@dataclass(frozen=True, slots=True)
class PreemptionRequest:
    cluster: ClusterSnapshot
    running: tuple[Running, ...]
    preemptor: Workload
    preemptor_borrowing: bool = False


@dataclass(frozen=True, slots=True)
class PreemptionState:
    """Who evicted whom, as ``(preemptor, victim)`` edges, to refuse cycles."""

    edges: frozenset[tuple[str, str]] = frozenset()

    def forget(self, names: Iterable[str]) -> PreemptionState:
        """Drop finished workloads: they can no longer take part in a cycle."""
        gone = set(names)
        return PreemptionState(frozenset(e for e in self.edges if not gone & set(e)))


@dataclass(frozen=True, slots=True)
class Victim:
    name: str
    reason: str
    work_lost: float


@dataclass(frozen=True, slots=True)
class Preemption:
    preemptor: str
    node: str | None
    victims: tuple[Victim, ...]
    binding: Binding | None
    reason: str


def work_lost(item: Running, now: float) -> float:
    """Seconds since the last checkpoint x size in GPU-equivalents."""
    since = item.checkpointed_at if item.checkpointed_at is not None else item.started_at
    demand = item.workload.demand
    # 100 cores weigh like one GPU: roughly what a GPU node's CPUs cost beside its GPUs.
    size = demand.gpu_total / GPU_MILLI + demand.cpu_milli / 100_000
    return max(0.0, now - since) * size


def preempt(
    request: PreemptionRequest, config: Policy, now: float, state: PreemptionState
) -> tuple[Preemption, PreemptionState]:
    """The cheapest set of victims on one node that lets the preemptor fit, if any."""
    name = request.preemptor.name
    if not config.preemption.enabled:
        return Preemption(name, None, (), None, "preemption is disabled by the policy"), state
    eligible = _eligible(request, config, state)
    if not eligible:
        return Preemption(name, None, (), None, "no running workload may be preempted"), state
    holdings = floor_holdings(config.floors, request.running) if config.floors else []
    best: tuple[tuple[float, ...], int, list[Running]] | None = None
    found = 0
    for node, items in _candidate_nodes(eligible, config):
        chosen = _victims_on(request, config, node, items, holdings=holdings, now=now)
        if chosen is not None:
            cost = _cost(chosen, config, now, node)
            if best is None or cost < best[0]:
                best = (cost, node, chosen)
            found += 1
            # Like Kubernetes, dry-run a bounded number of feasible nodes, not all of them.
            if found >= config.preemption.max_candidate_nodes:
                break
    if best is None:
        return Preemption(name, None, (), None, "no set of victims frees enough room"), state
    _, node, chosen = best
    return _decision(request, config, now, state, node=node, chosen=chosen)


def _candidate_nodes(eligible: list[Running], config: Policy) -> list[tuple[int, list[Running]]]:
    """Nodes with victims, the cheapest-looking first: lowest tier, then most GPU to free."""
    by_node: dict[int, list[Running]] = {}
    for item in eligible:
        by_node.setdefault(item.binding.node, []).append(item)

    def key(entry: tuple[int, list[Running]]) -> tuple[int, int, int]:
        node, items = entry
        low = min(config.tier(v.workload.tier).priority for v in items)
        return (low, -sum(v.workload.demand.gpu_total for v in items), node)

    return sorted(by_node.items(), key=key)


def _rank(item: Running, config: Policy, now: float) -> tuple[int, int, float, str]:
    tier = config.tier(item.workload.tier)
    return (tier.priority, 0 if item.borrowed else 1, work_lost(item, now), item.name)


def _cost(chosen: Sequence[Running], config: Policy, now: float, node: int) -> tuple[float, ...]:
    top = max(config.tier(v.workload.tier).priority for v in chosen)
    owned = sum(1 for v in chosen if not v.borrowed)
    lost = sum(work_lost(v, now) for v in chosen)
    return (float(top), float(owned), lost, float(len(chosen)), float(node))


def _ancestors(edges: frozenset[tuple[str, str]], target: str) -> set[str]:
    """Everything that evicted ``target``, directly or through a chain."""
    parents: dict[str, set[str]] = {}
    for a, b in edges:
        parents.setdefault(b, set()).add(a)
    seen: set[str] = set()
    todo = [target]
    while todo:
        for parent in parents.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _eligible(request: PreemptionRequest, config: Policy, state: PreemptionState) -> list[Running]:
    mine = config.tier(request.preemptor.tier).priority
    reclaim = config.preemption.reclaim_borrowed and not request.preemptor_borrowing
    forbidden = _ancestors(state.edges, request.preemptor.name)
    forbidden.add(request.preemptor.name)
    # Per tier: may its work be evicted by this preemptor, and only when borrowing?
    rules: dict[str, tuple[bool, bool]] = {}
    for rule in config.tiers:
        ok = rule.preemptible and rule.name != Tier.CRITICAL
        rules[rule.name] = (ok and rule.priority < mine, ok and reclaim and rule.priority <= mine)
    unknown = config.tier("")
    default = (unknown.priority < mine, reclaim and unknown.priority <= mine)
    out = []
    for item in request.running:
        lower, equal = rules.get(item.workload.tier, default)
        if (lower or (equal and item.borrowed)) and item.workload.name not in forbidden:
            out.append(item)
    return out


def floor_holdings(floors: Sequence[Floor], running: Iterable[Running]) -> list[int]:
    """What each floor's tier and/or team holds now, in the floor's resource."""
    held = [0] * len(floors)
    for item in running:
        vector = item.workload.demand.vector()
        for i, floor in enumerate(floors):
            if _covers(floor, item.workload):
                held[i] += vector.get(floor.resource, 0)
    return held


def _covers(floor: Floor, workload: Workload) -> bool:
    tier_ok = floor.tier is None or floor.tier == workload.tier
    return tier_ok and (floor.team is None or floor.team == workload.team)


def _fits(request: PreemptionRequest, node: int, freed: Sequence[Running]) -> bool:
    cluster, demand = request.cluster, request.preemptor.demand
    cpu = int(cluster.cpu_free[node]) + sum(v.workload.demand.cpu_milli for v in freed)
    mem = int(cluster.mem_free[node]) + sum(v.workload.demand.memory_mib for v in freed)
    if cpu < demand.cpu_milli or mem < demand.memory_mib:
        return False
    if not demand.gpus:
        return True
    gpu = _gpu_after(cluster, node, freed)
    return bool((gpu >= demand.gpu_milli).sum() >= demand.gpus)


def _gpu_after(cluster: ClusterSnapshot, node: int, freed: Sequence[Running]) -> IntArray:
    gpu: IntArray = cluster.gpu_free[node].copy()
    for v in freed:
        for slot in v.binding.gpus:
            gpu[slot] += v.binding.gpu_milli
    return gpu


def _victims_on(
    request: PreemptionRequest,
    config: Policy,
    node: int,
    items: list[Running],
    *,
    holdings: list[int],
    now: float,
) -> list[Running] | None:
    """Greedy by rank until the preemptor fits, then give back whoever is not needed."""
    if not request.cluster.model_ok(request.preemptor.demand)[node]:
        return None
    held = list(holdings)
    chosen: list[Running] = []
    for item in sorted(items, key=lambda v: _rank(v, config, now)):
        if _fits(request, node, chosen) or len(chosen) >= config.preemption.max_victims:
            break
        if _take(config.floors, held, item):
            chosen.append(item)
    if not chosen or not _fits(request, node, chosen):
        return None
    # Reprieve, most valuable first, anyone the preemptor can do without.
    for item in sorted(chosen, key=lambda v: _rank(v, config, now), reverse=True):
        rest = [v for v in chosen if v is not item]
        if rest and _fits(request, node, rest):
            chosen = rest
    return chosen


def _take(floors: Sequence[Floor], held: list[int], item: Running) -> bool:
    """Count ``item`` out of every floor it covers, unless that would go below one."""
    vector = item.workload.demand.vector()
    after = list(held)
    for i, floor in enumerate(floors):
        if _covers(floor, item.workload):
            after[i] -= vector.get(floor.resource, 0)
            if vector.get(floor.resource, 0) and after[i] < floor.amount:
                return False
    held[:] = after
    return True


def _decision(
    request: PreemptionRequest,
    config: Policy,
    now: float,
    state: PreemptionState,
    *,
    node: int,
    chosen: list[Running],
) -> tuple[Preemption, PreemptionState]:
    cluster, preemptor = request.cluster, request.preemptor
    slots = choose_slots(_gpu_after(cluster, node, chosen), preemptor.demand)
    binding = Binding(node, slots, preemptor.demand.gpu_milli)
    mine = config.tier(preemptor.tier).priority
    victims = tuple(
        Victim(
            v.name,
            f"preempted by {preemptor.name} ({preemptor.tier}): "
            + (
                f"lower tier {v.workload.tier}"
                if config.tier(v.workload.tier).priority < mine
                else "running on borrowed quota"
            ),
            work_lost(v, now),
        )
        for v in chosen
    )
    edges = state.edges | {(preemptor.name, v.name) for v in chosen}
    node_name = cluster.nodes[node].name
    reason = f"evicting {len(victims)} workload(s) on {node_name} for {preemptor.name}"
    return Preemption(preemptor.name, node_name, victims, binding, reason), PreemptionState(
        frozenset(edges)
    )

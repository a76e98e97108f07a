"""Small fluent builders for scheduling fixtures: clusters, workloads, policies."""

from __future__ import annotations

from modelplane.core.cluster import (
    GPU_MILLI,
    Binding,
    ClusterSnapshot,
    Demand,
    Node,
    Running,
    Workload,
)
from modelplane.spec.policy import (
    Floor,
    PlacementPolicy,
    PlacementStrategy,
    Policy,
    Quota,
    Team,
)

__all__ = ["ClusterBuilder", "PolicyBuilder", "job", "running"]


class ClusterBuilder:
    def __init__(self) -> None:
        self._nodes: list[Node] = []

    def node(
        self,
        name: str | None = None,
        *,
        cpu: int = 32_000,
        mem: int = 131_072,
        gpus: int = 0,
        model: str = "A10",
    ) -> ClusterBuilder:
        self._nodes.append(
            Node(
                name=name or f"n{len(self._nodes)}",
                cpu_milli=cpu,
                memory_mib=mem,
                gpu_model=model if gpus else "",
                gpu_count=gpus,
            )
        )
        return self

    def nodes(self, count: int, **kwargs: int | str) -> ClusterBuilder:
        for _ in range(count):
            self.node(**kwargs)  # type: ignore[arg-type]
        return self

    def build(self) -> ClusterSnapshot:
        return ClusterSnapshot.build(self._nodes)


def job(
    name: str,
    *,
    cpu: int = 1000,
    mem: int = 1024,
    gpus: int = 0,
    milli: int | None = None,
    team: str = "a",
    tier: str = "batch",
    models: tuple[str, ...] = (),
    at: float = 0.0,
) -> Workload:
    per_gpu = (milli if milli is not None else GPU_MILLI) if gpus else 0
    demand = Demand(cpu, mem, gpus, per_gpu, frozenset(models))
    return Workload(name=name, demand=demand, team=team, tier=tier, submitted_at=at)


def running(
    workload: Workload,
    node: int = 0,
    slots: tuple[int, ...] | None = None,
    *,
    started: float = 0.0,
    checkpointed: float | None = None,
    borrowed: bool = False,
) -> Running:
    gpus = slots if slots is not None else tuple(range(workload.demand.gpus))
    binding = Binding(node, gpus, workload.demand.gpu_milli)
    return Running(workload, binding, started, checkpointed, borrowed)


class PolicyBuilder:
    def __init__(self) -> None:
        self._policy = Policy()

    def team(
        self,
        name: str,
        *,
        cohort: str | None = "shared",
        resource: str = "gpu",
        nominal: int = 4000,
        borrow: int | None = None,
        lend: int | None = None,
    ) -> PolicyBuilder:
        quota = Quota(nominal=nominal, borrowing_limit=borrow, lending_limit=lend)
        existing = self._policy.team(name)
        quotas = {**(existing.quotas if existing else {}), resource: quota}
        teams = tuple(t for t in self._policy.teams if t.name != name)
        new = Team(name=name, cohort=cohort, quotas=quotas)
        self._policy = replace_policy(self._policy, teams=(*teams, new))
        return self

    def floor(
        self, amount: int, *, tier: str | None = None, team: str | None = None
    ) -> PolicyBuilder:
        floors = (*self._policy.floors, Floor(tier=tier, team=team, amount=amount))
        self._policy = replace_policy(self._policy, floors=floors)
        return self

    def strategy(self, strategy: PlacementStrategy, seed: int = 0) -> PolicyBuilder:
        placement = PlacementPolicy(strategy=strategy, seed=seed)
        self._policy = replace_policy(self._policy, placement=placement)
        return self

    def closed(self) -> PolicyBuilder:
        self._policy = replace_policy(self._policy, admit_unknown_teams=False)
        return self

    def build(self) -> Policy:
        return self._policy


def replace_policy(policy: Policy, **changes: object) -> Policy:
    """Revalidate on every change, as ``apply`` would."""
    return Policy.model_validate({**policy.model_dump(), **changes})

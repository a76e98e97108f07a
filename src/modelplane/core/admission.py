"""Admission under quota, with borrowing within a cohort and reclaim (Kueue's model).

Each team's quota per resource is split in two: the part it never lends
(``nominal - lending_limit``) and the lendable part, which joins its cohort's *pool*. A
team uses its protected part first; whatever it uses beyond that draws on the pool. Work is
admitted when, for every resource the team has a quota for:

1. the team stays within ``nominal + borrowing_limit`` (no limit when unset), and
2. the cohort's pool is not overdrawn.

A team within its nominal whose pool is overdrawn by borrowers *reclaims*: the decision
names borrowed workloads of other teams to evict, and the work is admitted on a later cycle
once they are gone. Resources a team declares no quota for are not limited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelplane.core.cluster import Demand, Workload
from modelplane.core.placement import queue_order
from modelplane.spec.policy import Policy, Quota, Team

__all__ = [
    "Admission",
    "AdmissionDecision",
    "AdmissionSnapshot",
    "AdmissionState",
    "Admitted",
    "admit",
    "pool_usage",
]


@dataclass(frozen=True, slots=True)
class Admitted:
    """Work holding quota now; ``borrowed`` when it was admitted beyond nominal."""

    workload: Workload
    borrowed: bool = False


@dataclass(frozen=True, slots=True)
class AdmissionSnapshot:
    pending: tuple[Workload, ...]
    admitted: tuple[Admitted, ...] = ()
    paused_tiers: frozenset[str] = frozenset()
    """Tiers whose admission degradation has paused."""


@dataclass(frozen=True, slots=True)
class AdmissionState:
    """When each still-pending workload was first seen waiting."""

    pending_since: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Admission:
    workload: str
    admitted: bool
    reason: str
    borrowed: bool = False
    reclaim: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    admissions: tuple[Admission, ...]

    @property
    def admitted(self) -> tuple[Admission, ...]:
        return tuple(a for a in self.admissions if a.admitted)

    @property
    def evict(self) -> tuple[str, ...]:
        return tuple(name for a in self.admissions for name in a.reclaim)


Usage = dict[str, dict[str, int]]
Vector = tuple[tuple[str, int], ...]
"""A demand as quota resources, in :meth:`Demand.vector`'s order (reasons name the first
resource short, so the order is part of the decision)."""


@dataclass(slots=True)
class _Cycle:
    """Per-call scratch: usage as the cycle admits; never escapes ``admit``.

    A cohort's pool and what its members draw on it are kept as running totals per cohort
    and resource, updated on every admit, so a workload's check costs its own resources and
    not a walk over every member's usage (at a depth of 10,000 that walk was most of a pass).
    """

    policy: Policy
    teams: dict[str, Team]
    members: dict[str, list[str]]
    usage: Usage
    borrowers: dict[str, list[Admitted]]
    cohort_of: dict[str, str]
    rules: dict[str, dict[str, tuple[int, int | None, int]]]
    """Per team and resource with a quota: its nominal, its limit (nominal plus borrowing
    limit, None when it may borrow without one) and the part it never lends (protected)."""
    pool: dict[tuple[str, str], int]
    """Per (cohort, resource): what its members lend in all."""
    drawn: dict[tuple[str, str], int]
    """Per (cohort, resource): what its members use beyond their protected parts."""
    vectors: dict[int, tuple[Demand, Vector]] = field(default_factory=dict)
    """Each demand's vector, computed once, by the demand's identity: hashing a demand costs
    more than its check. The entry holds the demand, so its id is not reused meanwhile."""
    reclaimable: dict[str, list[Admitted]] = field(default_factory=dict)
    """Per cohort, its preemptible borrowers in eviction order (built on first need)."""
    doomed: set[str] = field(default_factory=set)


def admit(
    snapshot: AdmissionSnapshot, config: Policy, now: float, state: AdmissionState
) -> tuple[AdmissionDecision, AdmissionState]:
    """One admission cycle over every pending workload, highest tier first."""
    cycle = _start(snapshot, config)
    out: list[Admission] = []
    waiting: dict[str, float] = {}
    usage = {team: dict(u) for team, u in cycle.usage.items()}
    paused = snapshot.paused_tiers
    since = state.pending_since
    for workload in queue_order(snapshot.pending, config, usage, _capacity(config)):
        if workload.tier in paused:
            result = Admission(workload.name, False, f"admission of {workload.tier} is paused")
        else:
            result = _try(cycle, workload)
        out.append(result)
        if not result.admitted:
            waiting[workload.name] = since.get(workload.name, now)
    return AdmissionDecision(tuple(out)), AdmissionState(waiting)


def _start(snapshot: AdmissionSnapshot, policy: Policy) -> _Cycle:
    teams = {t.name: t for t in policy.teams}
    members: dict[str, list[str]] = {}
    cohort_of: dict[str, str] = {}
    rules: dict[str, dict[str, tuple[int, int | None, int]]] = {}
    pool: dict[tuple[str, str], int] = {}
    drawn: dict[tuple[str, str], int] = {}
    for team in policy.teams:
        cohort = team.cohort or f"team:{team.name}"
        members.setdefault(cohort, []).append(team.name)
        cohort_of[team.name] = cohort
        mine_by_resource = rules[team.name] = {}
        for r, quota in team.quotas.items():
            mine = quota.nominal - _lendable(quota)
            limit = None if quota.borrowing_limit is None else quota.nominal + quota.borrowing_limit
            mine_by_resource[r] = (quota.nominal, limit, mine)
            pool[cohort, r] = pool.get((cohort, r), 0) + _lendable(quota)
            # What an idle member draws: nothing, unless it protects less than zero.
            drawn[cohort, r] = drawn.get((cohort, r), 0) + max(0, -mine)
    cycle = _Cycle(policy, teams, members, {}, {}, cohort_of, rules, pool, drawn)
    # Without teams nothing is limited, so usage need not be counted.
    for item in snapshot.admitted if policy.teams else ():
        _add(cycle, item.workload.team, _vector(cycle, item.workload.demand))
        if item.borrowed:
            cycle.borrowers.setdefault(item.workload.team, []).append(item)
    return cycle


def _capacity(policy: Policy) -> dict[str, int]:
    out: dict[str, int] = {}
    for team in policy.teams:
        for resource, quota in team.quotas.items():
            out[resource] = out.get(resource, 0) + quota.nominal
    return out


def _vector(cycle: _Cycle, demand: Demand) -> Vector:
    entry = cycle.vectors.get(id(demand))
    if entry is None or entry[0] is not demand:
        entry = cycle.vectors[id(demand)] = (demand, tuple(demand.vector().items()))
    return entry[1]


def _add(cycle: _Cycle, team: str, vector: Vector) -> None:
    """Count ``vector`` as used by ``team``, and what it draws on its cohort's pool."""
    bucket = cycle.usage.setdefault(team, {})
    cohort = cycle.cohort_of.get(team)
    rules = cycle.rules.get(team, {})
    for resource, amount in vector:
        before = bucket.get(resource, 0)
        after = bucket[resource] = before + amount
        rule = rules.get(resource)
        if cohort is not None and amount and rule is not None:
            mine = rule[2]
            cycle.drawn[cohort, resource] += max(0, after - mine) - max(0, before - mine)


def _lendable(quota: Quota) -> int:
    return quota.nominal if quota.lending_limit is None else quota.lending_limit


def pool_usage(
    teams: Mapping[str, Team], usage: Mapping[str, Mapping[str, int]], cohort: list[str], r: str
) -> int:
    """How much of a cohort's pool of resource ``r`` its members draw on (from scratch;
    :func:`admit` keeps the same figure as a running total)."""
    total = 0
    for name in cohort:
        quota = teams[name].quotas.get(r)
        if quota is not None:
            protected = quota.nominal - _lendable(quota)
            total += max(0, usage.get(name, {}).get(r, 0) - protected)
    return total


def _try(cycle: _Cycle, workload: Workload) -> Admission:
    team = cycle.teams.get(workload.team)
    vector = _vector(cycle, workload.demand)
    if team is None:
        if cycle.policy.admit_unknown_teams:
            _add(cycle, workload.team, vector)
            return Admission(workload.name, True, f"team {workload.team} has no quota")
        return Admission(workload.name, False, f"team {workload.team} is not in the policy")
    cohort = cycle.cohort_of[team.name]
    rules = cycle.rules[team.name]
    used = cycle.usage.get(team.name, {})
    borrowed, short = False, []
    for r, amount in vector:
        rule = rules.get(r)
        if rule is None or amount == 0:
            continue
        nominal, limit, mine = rule
        before = used.get(r, 0)
        if limit is not None and before + amount > limit:
            return Admission(
                workload.name,
                False,
                f"{r}: {amount} asked + {before} in use would exceed team {team.name}'s"
                f" limit {limit}",
            )
        borrowed |= before + amount > nominal
        # Only what goes past the team's own protected share draws on the pool.
        extra = max(0, before + amount - mine) - max(0, before - mine)
        gap = cycle.drawn[cohort, r] + extra - cycle.pool[cohort, r]
        if gap > 0:
            short.append((r, gap, before + amount <= nominal))
    if not short:
        _add(cycle, team.name, vector)
        how = "borrowing from its cohort" if borrowed else "within nominal quota"
        return Admission(workload.name, True, f"admitted {how}", borrowed=borrowed)
    return _reclaim_or_wait(cycle, workload, team, cohort, short)


def _reclaimable(cycle: _Cycle, cohort: str) -> list[Admitted]:
    """The cohort's preemptible borrowers, cheapest to evict first; fixed for the cycle (work
    admitted in it is never a borrower to reclaim), so sorted once."""
    found = cycle.reclaimable.get(cohort)
    if found is None:
        priority = {t.name: t.priority for t in cycle.policy.tiers}
        found = cycle.reclaimable[cohort] = sorted(
            (
                item
                for name in cycle.members[cohort]
                for item in cycle.borrowers.get(name, [])
                if cycle.policy.tier(item.workload.tier).preemptible
            ),
            key=lambda a: (
                priority.get(a.workload.tier, 0),
                -a.workload.submitted_at,
                a.workload.name,
            ),
        )
    return found


def _reclaim_or_wait(
    cycle: _Cycle,
    workload: Workload,
    team: Team,
    cohort: str,
    short: Sequence[tuple[str, int, bool]],
) -> Admission:
    r, missing, within_nominal = short[0]
    if not (
        within_nominal and all(s[2] for s in short) and cycle.policy.preemption.reclaim_borrowed
    ):
        return Admission(workload.name, False, f"{r}: cohort has {missing} too little to lend")
    candidates = _reclaimable(cycle, cohort)
    if not candidates:  # every gap is positive, so nothing could cover it
        return Admission(workload.name, False, f"{r}: lent quota cannot be reclaimed yet")
    need = {res: gap for res, gap, _ in short}
    victims: list[str] = []
    for item in candidates:
        if item.workload.team == team.name or item.workload.name in cycle.doomed:
            continue
        if all(v <= 0 for v in need.values()):
            break
        vector = item.workload.demand.vector()
        if any(vector.get(res, 0) > 0 for res, v in need.items() if v > 0):
            victims.append(item.workload.name)
            for res in need:
                need[res] -= vector.get(res, 0)
    if any(v > 0 for v in need.values()):
        return Admission(workload.name, False, f"{r}: lent quota cannot be reclaimed yet")
    cycle.doomed.update(victims)
    return Admission(
        workload.name,
        False,
        f"reclaiming {r} lent to the cohort: evicting {len(victims)} borrowed workload(s)",
        reclaim=tuple(victims),
    )

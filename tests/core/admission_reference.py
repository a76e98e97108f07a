"""The admission cycle as it was before its running totals (issue 14): the slow oracle.

Every workload's check walks the whole cohort (``pool_usage`` from scratch), which is
obviously right and O(pending x cohort); ``tests/core/test_admission.py`` checks that
:func:`modelplane.core.admission.admit` decides exactly as this does. Do not optimise it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelplane.core.admission import (
    Admission,
    AdmissionDecision,
    AdmissionSnapshot,
    AdmissionState,
    Admitted,
)
from modelplane.core.cluster import Workload
from modelplane.core.placement import queue_order
from modelplane.spec.policy import Policy, Quota, Team

__all__ = ["admit", "pool_usage"]


Usage = dict[str, dict[str, int]]


@dataclass(slots=True)
class _Cycle:
    """Per-call scratch: usage as the cycle admits; never escapes ``admit``."""

    policy: Policy
    teams: dict[str, Team]
    members: dict[str, list[str]]
    usage: Usage
    borrowers: dict[str, list[Admitted]]
    doomed: set[str] = field(default_factory=set)


def admit(
    snapshot: AdmissionSnapshot, config: Policy, now: float, state: AdmissionState
) -> tuple[AdmissionDecision, AdmissionState]:
    """One admission cycle over every pending workload, highest tier first."""
    cycle = _start(snapshot, config)
    out: list[Admission] = []
    waiting: dict[str, float] = {}
    usage = {team: dict(u) for team, u in cycle.usage.items()}
    for workload in queue_order(snapshot.pending, config, usage, _capacity(config)):
        if workload.tier in snapshot.paused_tiers:
            result = Admission(workload.name, False, f"admission of {workload.tier} is paused")
        else:
            result = _try(cycle, workload)
        out.append(result)
        if not result.admitted:
            waiting[workload.name] = state.pending_since.get(workload.name, now)
    return AdmissionDecision(tuple(out)), AdmissionState(waiting)


def _start(snapshot: AdmissionSnapshot, policy: Policy) -> _Cycle:
    teams = {t.name: t for t in policy.teams}
    members: dict[str, list[str]] = {}
    for team in policy.teams:
        members.setdefault(team.cohort or f"team:{team.name}", []).append(team.name)
    usage: Usage = {}
    borrowers: dict[str, list[Admitted]] = {}
    # Without teams nothing is limited, so usage need not be counted.
    for item in snapshot.admitted if policy.teams else ():
        _add(usage, item.workload, +1)
        if item.borrowed:
            borrowers.setdefault(item.workload.team, []).append(item)
    return _Cycle(policy, teams, members, usage, borrowers)


def _capacity(policy: Policy) -> dict[str, int]:
    out: dict[str, int] = {}
    for team in policy.teams:
        for resource, quota in team.quotas.items():
            out[resource] = out.get(resource, 0) + quota.nominal
    return out


def _add(usage: Usage, workload: Workload, sign: int) -> None:
    bucket = usage.setdefault(workload.team, {})
    for resource, amount in workload.demand.vector().items():
        bucket[resource] = bucket.get(resource, 0) + sign * amount


def _lendable(quota: Quota) -> int:
    return quota.nominal if quota.lending_limit is None else quota.lending_limit


def pool_usage(
    teams: Mapping[str, Team], usage: Mapping[str, Mapping[str, int]], cohort: list[str], r: str
) -> int:
    """How much of a cohort's pool of resource ``r`` its members draw on."""
    total = 0
    for name in cohort:
        quota = teams[name].quotas.get(r)
        if quota is not None:
            protected = quota.nominal - _lendable(quota)
            total += max(0, usage.get(name, {}).get(r, 0) - protected)
    return total


def _try(cycle: _Cycle, workload: Workload) -> Admission:
    team = cycle.teams.get(workload.team)
    if team is None:
        if cycle.policy.admit_unknown_teams:
            _add(cycle.usage, workload, +1)
            return Admission(workload.name, True, f"team {workload.team} has no quota")
        return Admission(workload.name, False, f"team {workload.team} is not in the policy")
    cohort = cycle.members[team.cohort or f"team:{team.name}"]
    borrowed, short = False, []
    for r, amount in workload.demand.vector().items():
        quota = team.quotas.get(r)
        if quota is None or amount == 0:
            continue
        before = cycle.usage.get(team.name, {}).get(r, 0)
        limit = None if quota.borrowing_limit is None else quota.nominal + quota.borrowing_limit
        if limit is not None and before + amount > limit:
            return Admission(
                workload.name,
                False,
                f"{r}: {amount} asked + {before} in use would exceed team {team.name}'s"
                f" limit {limit}",
            )
        borrowed |= before + amount > quota.nominal
        gap = _pool_gap(cycle, cohort, r, quota, before=before, amount=amount)
        if gap > 0:
            short.append((r, gap, before + amount <= quota.nominal))
    if not short:
        _add(cycle.usage, workload, +1)
        how = "borrowing from its cohort" if borrowed else "within nominal quota"
        return Admission(workload.name, True, f"admitted {how}", borrowed=borrowed)
    return _reclaim_or_wait(cycle, workload, team, cohort, short)


def _pool_gap(
    cycle: _Cycle, cohort: list[str], r: str, quota: Quota, *, before: int, amount: int
) -> int:
    """By how much admitting ``amount`` more would overdraw the cohort's pool."""
    pool = sum(_lendable(q) for n in cohort if (q := cycle.teams[n].quotas.get(r)) is not None)
    drawn = pool_usage(cycle.teams, cycle.usage, cohort, r)
    protected = quota.nominal - _lendable(quota)
    # Only what goes past the team's own protected share draws on the pool.
    extra = max(0, before + amount - protected) - max(0, before - protected)
    return drawn + extra - pool


def _reclaim_or_wait(
    cycle: _Cycle,
    workload: Workload,
    team: Team,
    cohort: list[str],
    short: Sequence[tuple[str, int, bool]],
) -> Admission:
    r, missing, within_nominal = short[0]
    if not (
        within_nominal and all(s[2] for s in short) and cycle.policy.preemption.reclaim_borrowed
    ):
        return Admission(workload.name, False, f"{r}: cohort has {missing} too little to lend")
    priority = {t.name: t.priority for t in cycle.policy.tiers}
    candidates = sorted(
        (
            item
            for name in cohort
            if name != team.name
            for item in cycle.borrowers.get(name, [])
            if item.workload.name not in cycle.doomed
            and cycle.policy.tier(item.workload.tier).preemptible
        ),
        key=lambda a: (priority.get(a.workload.tier, 0), -a.workload.submitted_at, a.workload.name),
    )
    need = {res: gap for res, gap, _ in short}
    victims: list[str] = []
    for item in candidates:
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

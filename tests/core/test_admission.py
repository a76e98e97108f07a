from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.admission import (
    AdmissionSnapshot,
    AdmissionState,
    Admitted,
    admit,
    pool_usage,
)
from modelplane.core.cluster import Workload
from modelplane.spec.policy import Policy

from . import admission_reference as reference
from .admission_strategies import admitted_items, policies, workloads
from .sched_builders import PolicyBuilder, job


def _policy() -> Policy:
    """Teams a and b share a cohort; a lends at most 1 GPU and may borrow at most 2."""
    return (
        PolicyBuilder()
        .team("a", nominal=4000, borrow=2000, lend=1000)
        .team("b", nominal=4000)
        .team("solo", cohort=None, nominal=1000)
        .build()
    )


def _gpus(name: str, count: int, team: str, tier: str = "batch") -> Workload:
    return job(name, gpus=count, team=team, tier=tier)


CASES = [
    ("within nominal", [], _gpus("w", 4, "a"), True, "admitted within nominal quota"),
    ("borrows", [_gpus("x", 4, "a")], _gpus("w", 2, "a"), True, "admitted borrowing"),
    (
        "borrowing limit",
        [_gpus("x", 4, "a")],
        _gpus("w", 3, "a"),
        False,
        "gpu: 3000 asked + 4000 in use would exceed team a's limit 6000",
    ),
    (
        "lending limit",
        [_gpus("x", 4, "b")],
        _gpus("w", 2, "b"),
        False,
        "gpu: cohort has 1000 too little to lend",
    ),
    ("no cohort", [], _gpus("w", 2, "solo"), False, "gpu: cohort has 1000 too little"),
    ("unknown team", [], _gpus("w", 1, "zzz"), True, "team zzz has no quota"),
]


@pytest.mark.parametrize(
    ("admitted", "workload", "ok", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_admission_table(
    admitted: list[Workload], workload: Workload, ok: bool, reason: str
) -> None:
    snapshot = AdmissionSnapshot((workload,), tuple(Admitted(w) for w in admitted))
    decision, _ = admit(snapshot, _policy(), 0.0, AdmissionState())
    (result,) = decision.admissions
    assert result.admitted is ok
    assert result.reason.startswith(reason)


def test_reclaim_evicts_borrowers_before_admitting() -> None:
    # b borrowed a's lendable GPU; a now wants its full nominal back.
    admitted = (
        Admitted(_gpus("a1", 3, "a")),
        Admitted(_gpus("b1", 4, "b")),
        Admitted(_gpus("b2", 1, "b"), borrowed=True),
    )
    snapshot = AdmissionSnapshot((_gpus("a2", 1, "a"),), admitted)
    decision, state = admit(snapshot, _policy(), 10.0, AdmissionState())
    (result,) = decision.admissions
    assert not result.admitted
    assert result.reclaim == ("b2",)
    assert decision.evict == ("b2",)
    assert state.pending_since == {"a2": 10.0}
    # Once the borrower is gone, the same request is admitted.
    snapshot = AdmissionSnapshot((_gpus("a2", 1, "a"),), admitted[:2])
    decision, state = admit(snapshot, _policy(), 20.0, state)
    assert decision.admissions[0].admitted
    assert state.pending_since == {}


def test_paused_tier_and_closed_policy() -> None:
    policy = PolicyBuilder().team("a").closed().build()
    pending = (
        _gpus("w", 1, "a"),
        _gpus("c", 1, "a", tier="critical"),
        _gpus("z", 1, "zz", tier="standard"),
    )
    snapshot = AdmissionSnapshot(pending, paused_tiers=frozenset({"batch"}))
    decision, _ = admit(snapshot, policy, 0.0, AdmissionState())
    reasons = {a.workload: (a.admitted, a.reason) for a in decision.admissions}
    assert reasons == {
        "c": (True, "admitted within nominal quota"),
        "w": (False, "admission of batch is paused"),
        "z": (False, "team zz is not in the policy"),
    }


def test_higher_tiers_are_admitted_first() -> None:
    pending = (_gpus("batch", 4, "solo"), _gpus("crit", 1, "solo", tier="critical"))
    decision, _ = admit(AdmissionSnapshot(pending), _policy(), 0.0, AdmissionState())
    assert [a.workload for a in decision.admitted] == ["crit"]


teams = st.sampled_from(["a", "b", "solo"])
requests = st.lists(
    st.tuples(st.integers(1, 4), teams, st.sampled_from(["batch", "standard", "critical"])),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(first=requests, second=requests)
def test_quotas_hold_except_declared_borrowing(
    first: list[tuple[int, str, str]], second: list[tuple[int, str, str]]
) -> None:
    policy = _policy()
    admitted: list[Admitted] = []
    state = AdmissionState()
    for round_, batch in enumerate((first, second)):
        pending = tuple(
            _gpus(f"r{round_}-{i}", n, team, tier) for i, (n, team, tier) in enumerate(batch)
        )
        by_name = {w.name: w for w in pending}
        decision, state = admit(AdmissionSnapshot(pending, tuple(admitted)), policy, 0.0, state)
        doomed = set(decision.evict)
        admitted = [a for a in admitted if a.workload.name not in doomed]
        admitted += [Admitted(by_name[a.workload], a.borrowed) for a in decision.admitted]
    usage: dict[str, dict[str, int]] = {}
    for item in admitted:
        bucket = usage.setdefault(item.workload.team, {})
        bucket["gpu"] = bucket.get("gpu", 0) + item.workload.demand.gpu_total
    teams_by_name = {t.name: t for t in policy.teams}
    for team in policy.teams:
        quota = team.quotas["gpu"]
        held = usage.get(team.name, {}).get("gpu", 0)
        limit = quota.nominal + (quota.borrowing_limit or 10**9)
        assert held <= limit
        members = [
            t.name for t in policy.teams if (t.cohort or t.name) == (team.cohort or team.name)
        ]
        pool = sum(
            teams_by_name[m].quotas["gpu"].lending_limit or teams_by_name[m].quotas["gpu"].nominal
            for m in members
        )
        assert pool_usage(teams_by_name, usage, members, "gpu") <= pool


@settings(max_examples=150, deadline=None)
@given(
    policy=policies(),
    pending=workloads("p", 25),
    admitted=admitted_items(12),
    paused=st.sampled_from((frozenset(), frozenset(), frozenset({"batch"}))),
    seen=st.dictionaries(st.sampled_from([f"p{i}" for i in range(25)]), st.floats(0, 9)),
)
def test_running_totals_decide_as_the_slow_reference(
    policy: Policy,
    pending: list[Workload],
    admitted: list[Admitted],
    paused: frozenset[str],
    seen: dict[str, float],
) -> None:
    # The oracle recomputes every cohort's pool for every workload; the fast cycle keeps
    # running totals. Decisions, reasons, reclaims and waiting times must be identical.
    snapshot = AdmissionSnapshot(tuple(pending), tuple(admitted), paused)
    state = AdmissionState(seen)
    assert admit(snapshot, policy, 10.0, state) == reference.admit(snapshot, policy, 10.0, state)


def test_reference_agrees_at_depth_with_reclaims() -> None:
    # Thousands of workloads over a few cohorts, borrowers to reclaim: the case the running
    # totals exist for, beyond what the random snapshots reach.
    rng = random.Random(14)
    builder = PolicyBuilder()
    for i in range(12):
        builder.team(f"t{i}", cohort=f"c{i % 3}", nominal=8000 + 1000 * (i % 4), lend=4000)
    policy = builder.build()
    admitted = [
        Admitted(_gpus(f"run{i}", rng.randint(1, 2), f"t{i % 12}"), borrowed=i % 3 == 0)
        for i in range(60)
    ]
    pending = [
        job(f"p{i}", gpus=rng.randint(1, 2), team=f"t{rng.randrange(13)}", at=float(i),
            tier=rng.choice(("batch", "standard", "critical")))
        for i in range(3000)
    ]  # fmt: skip
    snapshot = AdmissionSnapshot(tuple(pending), tuple(admitted))
    fast, _ = admit(snapshot, policy, 0.0, AdmissionState())
    slow, _ = reference.admit(snapshot, policy, 0.0, AdmissionState())
    assert fast == slow
    # The case covers admits and reclaims both.
    assert fast.admitted
    assert fast.evict

"""The one authorization rule, table-driven: scopes, teams, legacy owners, endpoint limits."""

from __future__ import annotations

import pytest

from modelplane.errors import Forbidden, InvalidSpec
from modelplane.security.scopes import (
    Action,
    Principal,
    Scope,
    authorize,
    decide,
    local_operator,
    parse_scopes,
)


def token(team: str, *scopes: Scope, endpoints: tuple[str, ...] | None = None) -> Principal:
    limited = None if endpoints is None else frozenset(endpoints)
    return Principal(f"svc-{team}", team, frozenset(scopes), limited)


RISK_DEPLOYER = token("risk", Scope.DEPLOY, Scope.READ)
RISK_CALLER = token("risk", Scope.PREDICT, endpoints=("fraud-score",))
GROWTH_DEPLOYER = token("growth", Scope.DEPLOY)
ADMIN = token("platform", Scope.ADMIN)

CASES = [
    # principal, action, allowed, reason contains
    (RISK_DEPLOYER, Action(Scope.DEPLOY, "apply", ("risk",)), True, ""),
    (RISK_DEPLOYER, Action(Scope.DEPLOY, "apply", ("risk", "risk")), True, ""),
    (RISK_DEPLOYER, Action(Scope.DEPLOY, "apply", ("growth",)), False, "team 'growth'"),
    # taking over another team's endpoint by re-applying it under one's own team
    (RISK_DEPLOYER, Action(Scope.DEPLOY, "apply", ("risk", "growth")), False, "team 'growth'"),
    (RISK_DEPLOYER, Action(Scope.DEPLOY, "push", (None,)), False, "only admin"),
    (RISK_DEPLOYER, Action(Scope.FEATURES_WRITE, "push", ("risk",)), False, "'features:write'"),
    (RISK_DEPLOYER, Action(Scope.ADMIN, "apply Policy/default"), False, "'admin' scope"),
    (RISK_DEPLOYER, Action(Scope.READ, "list"), True, ""),
    (GROWTH_DEPLOYER, Action(Scope.READ, "list"), False, "'read' scope"),
    (RISK_CALLER, Action(Scope.PREDICT, "predict", ("risk",), "fraud-score"), True, ""),
    (RISK_CALLER, Action(Scope.PREDICT, "predict", ("risk",), "churn"), False, "'churn'"),
    (RISK_CALLER, Action(Scope.PREDICT, "predict", ("growth",), "fraud-score"), False, "growth"),
    (RISK_CALLER, Action(Scope.DEPLOY, "apply", ("risk",)), False, "'deploy' scope"),
    (token("risk", Scope.PREDICT), Action(Scope.PREDICT, "p", ("risk",), "any"), True, ""),
    (ADMIN, Action(Scope.DEPLOY, "apply", ("growth", None)), True, ""),
    (ADMIN, Action(Scope.ADMIN, "apply Policy/default"), True, ""),
    (local_operator("alice"), Action(Scope.FEATURES_WRITE, "push", ("risk",)), True, ""),
]


@pytest.mark.parametrize(("principal", "action", "allowed", "reason"), CASES)
def test_decide(principal: Principal, action: Action, allowed: bool, reason: str) -> None:
    decision = decide(principal, action)
    assert decision.allowed is allowed
    assert reason in decision.reason


def test_authorize_raises_forbidden_naming_the_subject() -> None:
    with pytest.raises(Forbidden, match="svc-risk") as caught:
        authorize(RISK_DEPLOYER, Action(Scope.DEPLOY, "delete Endpoint/churn", ("growth",)))
    assert caught.value.code == "forbidden"
    assert "team 'growth'" in caught.value.details[0]["problem"]


def test_parse_scopes_names_the_bad_one() -> None:
    assert parse_scopes(["read", "features:write"]) == {Scope.READ, Scope.FEATURES_WRITE}
    with pytest.raises(InvalidSpec) as caught:
        parse_scopes(["read", "root"])
    assert caught.value.details[0]["field"] == "scopes[1]"
    with pytest.raises(InvalidSpec, match="at least one"):
        parse_scopes([])

"""Who may do what: principals, scopes and the one pure rule that decides.

A :class:`Principal` is whoever a verified token (or the local operator) speaks for: a
subject in a team with scopes. An :class:`Action` is what a request would do: the scope it
needs and the teams owning what it touches. :func:`decide` answers with no I/O, so every
edge (control API, gateway, CLI) and every test asks the same function.

The rule, in order:

1. ``admin`` may do anything.
2. The action's scope must be among the token's scopes.
3. Every team the action touches must be the token's team. A resource owned by no team
   (a model registered before teams existed) is written by ``admin`` only.
4. A ``predict`` token limited to some endpoints predicts only those.

Reads (``read``) name no owning team: the catalogue of what runs is visible to every team.
What carries callers' data (the prediction log) names its team, so only that team reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from modelplane.errors import Forbidden, InvalidSpec

__all__ = [
    "Action",
    "Decision",
    "Principal",
    "Scope",
    "authorize",
    "decide",
    "local_operator",
    "parse_scopes",
]


class Scope(StrEnum):
    """What a token may be used for."""

    READ = "read"
    """Read specs, status, models, versions and the audit log of every team."""
    PREDICT = "predict"
    """Call the gateway's predict routes of the team's endpoints (or of listed ones)."""
    DEPLOY = "deploy"
    """Apply, roll out, roll back and delete the team's endpoints; push its models."""
    FEATURES_WRITE = "features:write"
    """Apply the team's feature sets and push values into them."""
    JOBS = "jobs"
    """Submit and cancel the team's batch jobs."""
    ADMIN = "admin"
    """Everything, for every team; the only scope that changes policy or tokens."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``endpoints`` limits ``predict`` to those names; ``None``: all of
    the team's. ``expires_at`` is wall-clock seconds, so a cache can drop it in time."""

    subject: str
    team: str
    scopes: frozenset[Scope]
    endpoints: frozenset[str] | None = None
    token_id: str | None = None
    expires_at: float | None = None

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True)
class Action:
    """What a request would do. ``teams``: the owners of everything it touches (both the
    stored resource's and the new spec's on an update); ``None`` marks something owned by
    no team. ``endpoint`` is set for predictions."""

    scope: Scope
    what: str
    teams: tuple[str | None, ...] = ()
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


_ALLOW = Decision(True)


def decide(principal: Principal, action: Action) -> Decision:
    """Whether ``principal`` may take ``action``, and why not."""
    if principal.is_admin:
        return _ALLOW
    if action.scope not in principal.scopes:
        return Decision(False, f"{action.what} needs the '{action.scope}' scope")
    for team in action.teams:
        if team is None:
            return Decision(False, f"{action.what}: it belongs to no team, so only admin may")
        if team != principal.team:
            return Decision(
                False, f"{action.what}: it belongs to team '{team}', not '{principal.team}'"
            )
    limited = principal.endpoints
    if action.endpoint is not None and limited is not None and action.endpoint not in limited:
        return Decision(False, f"{action.what}: this token may not call '{action.endpoint}'")
    return _ALLOW


def authorize(principal: Principal, action: Action) -> None:
    """:func:`decide`, raising :class:`~modelplane.errors.Forbidden` on a refusal."""
    decision = decide(principal, action)
    if not decision.allowed:
        raise Forbidden(
            f"{principal.subject} (team {principal.team}) may not: {decision.reason}",
            details=[{"problem": decision.reason, "subject": principal.subject}],
        )


def parse_scopes(values: Iterable[str], *, field: str = "scopes") -> frozenset[Scope]:
    """Scope names as :class:`Scope` members, or :class:`InvalidSpec` naming the bad one."""
    known = ", ".join(s.value for s in Scope)
    scopes: set[Scope] = set()
    for index, value in enumerate(values):
        try:
            scopes.add(Scope(value))
        except ValueError:
            raise InvalidSpec(
                f"{field}: '{value}' is not a scope (one of {known})",
                details=[{"field": f"{field}[{index}]", "problem": f"expected one of {known}"}],
            ) from None
    if not scopes:
        raise InvalidSpec(
            f"{field}: a token needs at least one scope",
            details=[{"field": field, "problem": "empty"}],
        )
    return frozenset(scopes)


def local_operator(actor: str) -> Principal:
    """The principal of a server run without authentication: whoever started it, as admin."""
    return Principal(actor, "*", frozenset({Scope.ADMIN}))

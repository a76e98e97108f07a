"""Whether a resource's team and tier are ones the policy in force knows.

Checked at apply and submit, against the policy applied then, rather than in the spec
models: a spec is valid on its own, and only the policy says which teams and tiers exist.
Without this, a job of a team the policy does not admit waits forever, and a misspelt tier
(``critcal``) silently runs as the lowest priority.
"""

from __future__ import annotations

from modelplane.errors import InvalidSpec
from modelplane.spec.policy import Policy

__all__ = ["check_team_and_tier"]


def check_team_and_tier(policy: Policy, *, tier: str, team: str | None = None) -> None:
    """Refuse a tier the policy does not define and, when ``team`` is given and the policy
    does not admit unknown teams, a team it does not name; each error names the field and
    what the policy knows."""
    known_tiers = [t.name for t in policy.tiers]
    if tier not in known_tiers:
        known = ", ".join(known_tiers)
        raise InvalidSpec(
            f"tier: '{tier}' is not a tier of policy {policy.name} ({known})",
            details=[{"field": "tier", "problem": f"expected one of {known}"}],
        )
    if team is None or policy.admit_unknown_teams or policy.team(team) is not None:
        return
    known = ", ".join(t.name for t in policy.teams) or "none"
    raise InvalidSpec(
        f"team: '{team}' is not a team of policy {policy.name}, which admits no other"
        f" (admit_unknown_teams: false); teams known: {known}",
        details=[{"field": "team", "problem": f"expected one of {known}"}],
    )

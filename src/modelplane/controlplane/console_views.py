"""What the console's outcome view reads: ``GET /v1/outcomes``, every endpoint's outcomes
by version (:func:`modelplane.observe.outcome_report.outcomes_by_version`).

Outcomes are computed from what callers sent and were answered, so, as with recent errors,
a caller sees the endpoints its team owns (admin sees all); the others are left out, not
refused. The usage view reads ``/v1/reports/cost`` and ``/v1/reports/usage``, and each
version's evidence pack is ``/v1/versions/{ref}/evidence.html``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from sqlalchemy import Engine

from modelplane.observe.outcome_report import OutcomeReport, outcomes_by_version
from modelplane.security.scopes import Action, Principal, Scope, authorize, decide
from modelplane.store.resources import ResourceStore

__all__ = ["outcome_view", "register_console_views"]


def outcome_view(report: OutcomeReport, team: str | None) -> dict[str, Any]:
    """The report as the console shows it; a comparison's versions and its metric values
    under distinct names."""
    whole = report.to_dict()
    return {
        "endpoint": report.endpoint,
        "team": team,
        "task": report.task,
        "metric": report.metric,
        "versions": whole["versions"],
        "feature_sets": whole["feature_sets"],
        "comparisons": [
            {
                "baseline": c.baseline,
                "candidate": c.candidate,
                "regressed": c.regressed,
                "metric": c.comparison.metric.value,
                "reading": c.comparison.to_reading(),
            }
            for c in report.comparisons
        ],
        "alerts": report.alerts,
    }


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def register_console_views(api: FastAPI, engine: Engine) -> None:
    """Add ``GET /v1/outcomes`` to ``api``."""
    resources = ResourceStore(engine)

    @api.get("/v1/outcomes")
    def outcomes(
        who: Annotated[Principal, Depends(_principal)],
        endpoint: Annotated[list[str] | None, Query(description="Only these endpoints.")] = None,
    ) -> list[dict[str, Any]]:
        """Outcomes by model version of each endpoint the caller's team owns (every one for
        admin): label coverage and latency, metrics, business sums, the confidence-based
        estimate, and regressions between versions."""
        authorize(who, Action(Scope.READ, "read outcomes"))
        teams = {r.name: r.spec.get("team") for r in resources.list("Endpoint")}
        wanted = sorted(teams) if endpoint is None else [e for e in endpoint if e in teams]
        out = []
        for name in wanted:
            team = teams[name]
            if decide(who, Action(Scope.READ, f"read outcomes of {name}", (team,))).allowed:
                team_name = team if isinstance(team, str) else None
                out.append(outcome_view(outcomes_by_version(engine, name), team_name))
        return out

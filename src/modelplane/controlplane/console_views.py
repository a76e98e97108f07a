"""What the console's outcome view reads: ``GET /v1/outcomes``, every endpoint's outcomes
by version (:func:`modelplane.observe.outcome_report.outcomes_by_version`).

A report is computed again only when outcomes arrived since, or a minute passed
(:class:`ReportCache`). Outcomes are computed from what callers sent and were answered, so,
as with recent errors, a caller sees the endpoints its team owns (admin sees all); the
others are left out, not refused. The usage view reads ``/v1/reports/cost`` and
``/v1/reports/usage``, and each version's evidence pack is
``/v1/versions/{ref}/evidence.html``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from sqlalchemy import Engine

from modelplane.observe.outcome_report import OutcomeReport, outcomes_by_version
from modelplane.observe.outcomes import OutcomeStore
from modelplane.security.scopes import Action, Principal, Scope, authorize, decide
from modelplane.store.resources import ResourceStore
from modelplane.types import Clock, SystemClock

__all__ = ["FRESH_S", "ReportCache", "outcome_view", "register_console_views"]


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


FRESH_S = 60.0
"""How long a computed report stands while no outcome arrives: answers keep coming without
labels (coverage moves, slowly), so it is computed again after this long all the same."""


class ReportCache:
    """Each endpoint's report, computed again only when outcomes arrived since (one index
    scan tells) or after :data:`FRESH_S`: a report reads every labelled answer (seconds at
    tens of thousands), and the console asks every few seconds."""

    def __init__(
        self, engine: Engine, *, fresh_s: float = FRESH_S, clock: Clock | None = None
    ) -> None:
        self.engine = engine
        self.fresh_s = fresh_s
        self._clock = clock or SystemClock()
        self._store = OutcomeStore(engine)
        self._reports: dict[str, tuple[tuple[int, float] | None, float, OutcomeReport]] = {}

    def reports(self, names: Sequence[str]) -> dict[str, OutcomeReport]:
        arrived = self._store.arrivals()
        now = self._clock.monotonic()
        out: dict[str, OutcomeReport] = {}
        for name in names:
            seen = arrived.get(name)
            kept = self._reports.get(name)
            if kept is not None and kept[0] == seen and now - kept[1] < self.fresh_s:
                out[name] = kept[2]
                continue
            out[name] = outcomes_by_version(self.engine, name)
            self._reports[name] = (seen, now, out[name])
        return out


def register_console_views(api: FastAPI, engine: Engine) -> None:
    """Add ``GET /v1/outcomes`` to ``api``."""
    resources = ResourceStore(engine)
    cache = ReportCache(engine)

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
        allowed = [
            name
            for name in wanted
            if decide(who, Action(Scope.READ, f"read outcomes of {name}", (teams[name],))).allowed
        ]
        reports = cache.reports(allowed)
        out = []
        for name in allowed:
            team = teams[name]
            out.append(outcome_view(reports[name], team if isinstance(team, str) else None))
        return out

"""Cost and usage reports over HTTP, read-only: ``GET /v1/reports/cost`` and
``GET /v1/reports/usage`` answer the documents of :mod:`modelplane.observe.usage_report`
(what ``modelplane report`` prints, embedded or through the API).

Reading needs the ``read`` scope, which reads every team's specs and status; so do these:
resource figures and prices are no callers' data.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from sqlalchemy import Engine

from modelplane.observe.usage_report import cost_document, parse_period, usage_document
from modelplane.security.scopes import Action, Principal, Scope, authorize

__all__ = ["register_usage_routes"]


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


Caller = Annotated[Principal, Depends(_principal)]
Teams = Annotated[list[str] | None, Query(description="Only these teams (repeat the key).")]
Since = Annotated[str, Query(description="How far back: 7d, 12h, 30m, 90s or 2w.")]


def register_usage_routes(api: FastAPI, engine: Engine) -> None:
    """Add the two report routes to ``api``, reading ``engine``'s store."""

    @api.get("/v1/reports/cost")
    def cost_report(who: Caller, since: Since = "7d", team: Teams = None) -> dict[str, Any]:
        """Each team's cost over the period, jobs and serving together: used, reserved and
        idle resource-hours and their cost; teams + unreserved idle = the nodes' cost."""
        authorize(who, Action(Scope.READ, "read the cost report"))
        return cost_document(engine, parse_period(since, time.time()), teams=team or None)

    @api.get("/v1/reports/usage")
    def usage_report(
        who: Caller,
        since: Since = "7d",
        team: Teams = None,
        top: Annotated[int, Query(ge=0, le=1000)] = 5,
    ) -> dict[str, Any]:
        """Endpoints and jobs by reserved against used, the most reserved and least used
        first, with what reserving the observed peak would save."""
        authorize(who, Action(Scope.READ, "read the usage report"))
        period = parse_period(since, time.time())
        return usage_document(engine, period, teams=team or None, top=top)

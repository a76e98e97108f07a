"""Cost and usage reports as plain JSON documents, read from the state store.

The CLI (embedded or through the control API), the API routes and the console all render
these same documents: :func:`cost_document` (by team: used, reserved, left idle, cost, with
the nodes' cost and the unreserved idle beside them) and :func:`usage_document` (by
endpoint and job: reserved against used, ranked by waste, and what reserving the observed
peak would save). Resource figures are in core-hours, GiB-hours and GPU-hours; money is in
the currency of the cluster model's ``cost_per_hour``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from modelplane.errors import InvalidSpec
from modelplane.observe.cost import (
    RESOURCES,
    CostReport,
    GroupUsage,
    TeamCost,
    cost_report,
    group_usage,
)
from modelplane.observe.usage import read_nodes, read_usage

__all__ = [
    "MAX_PERIOD_S",
    "Period",
    "cost_document",
    "parse_period",
    "usage_document",
]

MAX_PERIOD_S = 400 * 86400.0
"""The longest period a report covers (a year and a bit)."""
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Period:
    """``[since, until]`` in Unix seconds."""

    since: float
    until: float

    @property
    def seconds(self) -> float:
        return self.until - self.since


def parse_period(since: str, now: float, *, field: str = "since") -> Period:
    """``7d``, ``12h``, ``30m``, ``90s`` or ``2w`` back from ``now``; a clear error naming
    ``field`` for anything else."""
    found = _DURATION.match(since)
    problem = "expected a duration such as 7d, 12h, 30m or 90s"
    if found is None:
        raise InvalidSpec(
            f"{field}: '{since}' is not a duration ({problem})",
            details=[{"field": field, "problem": problem}],
        )
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if not 0 < seconds <= MAX_PERIOD_S:
        problem = f"must be more than 0 and at most {MAX_PERIOD_S / 86400:g}d"
        raise InvalidSpec(
            f"{field}: '{since}' {problem}", details=[{"field": field, "problem": problem}]
        )
    return Period(now - seconds, now)


def _hours(by_resource: Any) -> dict[str, float]:
    """Resource-seconds as resource-hours, rounded for people."""
    return {r: round(float(by_resource[r]) / _HOUR_S, 6) for r in RESOURCES}


def _money(value: float) -> float:
    return round(value, 6)


def _team(row: TeamCost) -> dict[str, Any]:
    return {
        "team": row.team,
        "cost": _money(row.cost),
        "serving_cost": _money(row.serving_cost),
        "jobs_cost": _money(row.jobs_cost),
        "waste": _money(row.waste),
        "idle_share": round(row.idle_share, 4),
        "reserved_hours": _hours(row.reserved),
        "used_hours": _hours(row.used),
        "shards": row.shards,
        "jobs": row.jobs,
        "queue_wait_s": round(row.queue_wait_s, 3),
        "unpriced_s": round(row.unpriced_s, 3),
    }


def cost_document(
    engine: Engine, period: Period, *, teams: Sequence[str] | None = None
) -> dict[str, Any]:
    """What each team used, reserved and left idle over ``period``, and what it cost;
    ``teams`` narrows the rows, never the nodes' cost or the unreserved idle."""
    report = _cost(engine, period)
    rows = [t for t in report.teams if teams is None or t.team in teams]
    return {
        "since": period.since,
        "until": period.until,
        "teams": [_team(t) for t in rows],
        "nodes_cost": _money(report.nodes_cost),
        "teams_cost": _money(report.teams_cost),
        "idle_cost": _money(report.idle_cost),
        "idle_by_resource": {r: _money(v) for r, v in report.idle_by_resource.items()},
        # teams + idle = nodes: shown, so anyone can check the sum
        "unaccounted": _money(report.nodes_cost - report.teams_cost - report.idle_cost),
    }


def _cost(engine: Engine, period: Period) -> CostReport:
    usage = read_usage(engine, period.since, period.until)
    nodes = read_nodes(engine, period.since, period.until)
    return cost_report(usage, nodes, period.since, period.until)


def _group(row: GroupUsage) -> dict[str, Any]:
    return {
        "kind": row.kind.value,
        "name": row.name,
        "team": row.team,
        "replicas": row.replicas,
        "reserved": {r: round(row.reserved[r], 4) for r in RESOURCES},
        "peak": {r: round(row.peak[r], 4) for r in RESOURCES},
        "utilization": {
            r: None if (u := row.utilization[r]) is None else round(u, 4) for r in RESOURCES
        },
        "cost": _money(row.cost),
        "waste": _money(row.waste),
        "saving_at_peak": _money(row.saving_at_peak),
        "idle_share": round(row.idle_share, 4),
        "wasted_reference": round(row.wasted_reference, 6),
    }


def usage_document(
    engine: Engine,
    period: Period,
    *,
    teams: Sequence[str] | None = None,
    top: int = 10,
) -> dict[str, Any]:
    """Endpoints and jobs over ``period``, most reserved and least used first; ``top``
    names the worst few in one line."""
    if top < 0:
        raise InvalidSpec("top: must be >= 0", details=[{"field": "top", "problem": "< 0"}])
    # Every team's intervals are charged, then the rows narrowed: on a node reserved past
    # its capacity each share depends on the others'.
    usage = read_usage(engine, period.since, period.until)
    nodes = read_nodes(engine, period.since, period.until)
    groups = [g for g in group_usage(usage, nodes) if teams is None or g.team in teams]
    # An endpoint that uses what it reserves is no finding, however much it costs.
    wasteful = [g for g in groups if g.idle_share >= 0.5 and g.wasted_reference > 0]
    return {
        "since": period.since,
        "until": period.until,
        "groups": [_group(g) for g in groups],
        "reserve_most_use_least": [g.name for g in wasteful[:top]],
        "saving_at_peak": _money(math.fsum(g.saving_at_peak for g in groups)),
        "cost": _money(math.fsum(g.cost for g in groups)),
    }

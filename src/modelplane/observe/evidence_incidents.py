"""How a version behaved in production, for its evidence pack: SLOs, request figures and
incidents.

Where each fact is recorded:

* **SLOs**: the SLO recorder's ``slo_intervals`` (per endpoint, good and total requests
  by interval), summed over each span in which the version served, against the objectives
  of the contract then in force. The intervals are the endpoint's, not the version's: a
  span where the version had part of the traffic says so with its weight.
* **request figures**: the prediction log (every error and fallback, a sample of the
  rest) and the request log (every request, kept briefly), matched by the version's digest.
* **fallbacks** and **circuit-breaker openings**: every fallback answer is kept in the
  prediction log with its reason, and every error; ``circuit_open`` fallback rows, and the
  error rows of an endpoint without a fallback refused because the route's breaker was
  open, are grouped into openings by :data:`BREAKER_GAP_S`. The breaker's own state lives
  in the gateway's memory only: an opening that no request met is not seen.
* **rollbacks**: ``rollout.rollback`` events and people's rollback commands in the
  rollouts that involved the version; **degradations**: ``degradation.*`` events while it
  served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelplane.observe.evidence_timeline import Period, RolloutStory, decision_row
from modelplane.store.schema import AuditEventRow, PredictionRow, RequestRow, SloIntervalRow

__all__ = [
    "BREAKER_GAP_S",
    "MAX_ROWS",
    "OPEN_CIRCUIT",
    "incidents_section",
    "production_section",
]

BREAKER_GAP_S = 60.0
"""Answers given while the breaker was open that are further apart than this belong to
different openings."""
OPEN_CIRCUIT = "the circuit of route"
"""How the gateway's refusal reads when a route's breaker is open (dataplane/handler.py)."""
MAX_ROWS = 200_000
"""Bounds how many log rows one pack reads (the newest)."""


def _window(period: Period, now: datetime) -> tuple[float, float]:
    end = period.end or now
    return period.start.timestamp(), end.timestamp()


def production_section(
    session: Session, periods: Sequence[Period], digest: str, ref: str, *, now: datetime
) -> dict[str, Any]:
    """Per serving span (an open one up to ``now``), the endpoint's SLO over it; and the
    version's request figures."""
    spans = []
    for period in periods:
        start, end = _window(period, now)
        totals = session.execute(
            select(
                func.coalesce(func.sum(SloIntervalRow.avail_good), 0),
                func.coalesce(func.sum(SloIntervalRow.avail_total), 0),
                func.coalesce(func.sum(SloIntervalRow.latency_good), 0),
                func.coalesce(func.sum(SloIntervalRow.latency_total), 0),
            ).where(
                SloIntervalRow.endpoint == period.endpoint,
                SloIntervalRow.at > start,
                SloIntervalRow.at <= end,
            )
        ).one()
        good, total, fast, timed = (int(x) for x in totals)
        slo = dict((period.spec.get("contract") or {}).get("slo") or {})
        availability_target = float(slo.get("availability", 0.999))
        latency_target = float(slo.get("latency_quantile", 0.99))
        spans.append({
            "endpoint": period.endpoint,
            "from": period.start.isoformat(),
            "to": None if period.end is None else period.end.isoformat(),
            "weight_percent": period.weight_percent,
            "shadow_percent": period.shadow_percent,
            "objectives": {
                "availability": availability_target,
                "latency_ms": float(slo.get("latency_ms", 100.0)),
                "latency_quantile": latency_target,
            },
            "requests": total,
            "availability": _ratio(good, total),
            "within_latency": _ratio(fast, timed),
            "availability_met": None if total == 0 else good / total >= availability_target,
            "latency_met": None if timed == 0 else fast / timed >= latency_target,
        })  # fmt: skip
    return {"slo": spans, "requests": _request_figures(session, digest, ref)}


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 6)


def _request_figures(session: Session, digest: str, ref: str) -> dict[str, Any]:
    kept = session.execute(
        select(PredictionRow.total_ms, PredictionRow.status, PredictionRow.fallback_reason)
        .where(PredictionRow.digest == digest)
        .order_by(PredictionRow.id.desc())
        .limit(MAX_ROWS)
    ).all()
    brief = session.execute(
        select(RequestRow.total_ms, RequestRow.status)
        .where(RequestRow.digest == digest)
        .order_by(RequestRow.id.desc())
        .limit(MAX_ROWS)
    ).all()
    latencies = sorted([float(r.total_ms) for r in kept] + [float(r.total_ms) for r in brief])
    return {
        "source": "prediction log (errors, fallbacks, a sample) and request log (recent)",
        "version": ref,
        "requests_seen": len(latencies),
        "errors": sum(1 for r in kept if r.status >= 400)
        + sum(1 for r in brief if r.status >= 400),
        "fallbacks": sum(1 for r in kept if r.fallback_reason is not None),
        "latency_ms": {
            "p50": _quantile(latencies, 0.50),
            "p90": _quantile(latencies, 0.90),
            "p99": _quantile(latencies, 0.99),
        },
    }


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted ``values``."""
    if not values:
        return None
    return round(values[max(0, math.ceil(q * len(values)) - 1)], 3)


def incidents_section(
    session: Session,
    digest: str,
    ref: str,
    periods: Sequence[Period],
    stories: Sequence[RolloutStory],
) -> dict[str, Any]:
    """Rollbacks, fallbacks by reason, breaker openings and degradations while serving."""
    rows = session.execute(
        select(PredictionRow.at, PredictionRow.endpoint, PredictionRow.fallback_reason,
               PredictionRow.request_id)
        .where(PredictionRow.digest == digest, PredictionRow.fallback_reason.is_not(None))
        .order_by(PredictionRow.id.desc())
        .limit(MAX_ROWS)
    ).all()  # fmt: skip
    rows = sorted(rows, key=lambda r: r.at)
    by_reason: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_reason.setdefault(
            str(row.fallback_reason),
            {"reason": row.fallback_reason, "count": 0, "first": row.at.isoformat(),
             "endpoints": set(), "example_request_ids": []},
        )  # fmt: skip
        entry["count"] += 1
        entry["last"] = row.at.isoformat()
        entry["endpoints"].add(row.endpoint)
        if len(entry["example_request_ids"]) < 5:
            entry["example_request_ids"].append(row.request_id)
    fallbacks = [{**e, "endpoints": sorted(e["endpoints"])} for e in by_reason.values()]
    # Without a fallback, an open breaker's refusal is an error row that says so.
    refused = session.execute(
        select(PredictionRow.at, PredictionRow.endpoint, PredictionRow.fallback_reason,
               PredictionRow.request_id)
        .where(PredictionRow.digest == digest, PredictionRow.fallback_reason.is_(None),
               PredictionRow.detail.like(f"%{OPEN_CIRCUIT}%"))
        .order_by(PredictionRow.id.desc())
        .limit(MAX_ROWS)
    ).all()  # fmt: skip
    opened = sorted(
        [*(r for r in rows if r.fallback_reason == "circuit_open"), *refused], key=lambda r: r.at
    )
    return {
        "rollbacks": _rollbacks(stories),
        "fallbacks": sorted(fallbacks, key=lambda e: -int(e["count"])),
        "breaker_openings": _openings(opened),
        "degradations": _degradations(session, periods),
        "version": ref,
    }


def _rollbacks(stories: Sequence[RolloutStory]) -> list[dict[str, Any]]:
    out = []
    for story in stories:
        for event in story.events:
            if event.action == "rollout.rollback":
                out.append({**decision_row(event), "endpoint": story.endpoint, "to": story.to})
        for given in story.commands():
            if given.get("command") == "rollback":
                at = datetime.fromtimestamp(float(given.get("at", 0.0)), UTC).isoformat()
                out.append({"kind": "rollback command", "actor": given.get("by"), "at": at,
                            "endpoint": story.endpoint, "to": story.to})  # fmt: skip
    return sorted(out, key=lambda r: str(r["at"]))


def _openings(rows: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in rows:
        last = out[-1] if out else None
        stamp = row.at.timestamp()
        if (
            last is not None
            and last["endpoint"] == row.endpoint
            and stamp - last["_last"] <= BREAKER_GAP_S
        ):
            last["answers_while_open"] += 1
            last["last_seen"] = row.at.isoformat()
            last["_last"] = stamp
            continue
        seen = row.at.isoformat()
        out.append({"endpoint": row.endpoint, "first_seen": seen, "last_seen": seen,
                    "answers_while_open": 1, "_last": stamp})  # fmt: skip
    return [{k: v for k, v in o.items() if k != "_last"} for o in out]


def _degradations(session: Session, periods: Sequence[Period]) -> list[dict[str, Any]]:
    if not periods:
        return []
    start = min(p.start for p in periods)
    open_ended = any(p.end is None for p in periods)
    end = None if open_ended else max(p.end for p in periods if p.end is not None)
    query = select(AuditEventRow).where(
        AuditEventRow.action.like("degradation.%"), AuditEventRow.at >= start
    )
    if end is not None:
        query = query.where(AuditEventRow.at <= end)
    events = session.scalars(query.order_by(AuditEventRow.seq).limit(MAX_ROWS))
    return [
        {"seq": e.seq, "at": e.at.isoformat(), "action": e.action, "subject": e.subject,
         "reason": e.reason, "level": (e.after or {}).get("level"), "hash": e.hash}
        for e in events
    ]  # fmt: skip

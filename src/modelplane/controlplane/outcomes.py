"""The outcome recorder: each endpoint's outcome report as an ``OutcomeReport`` resource.

Labels arrive minutes to weeks after the answers, so a regression can appear at any time,
long after a rollout ended. Every ``interval_s`` the recorder computes the report of each
endpoint that has outcomes (:func:`modelplane.observe.outcome_report.outcomes_by_version`)
and writes a summary as the status of an ``OutcomeReport`` resource named after the
endpoint: ``status`` reads it in the same query as everything else, without computing
anything. An alert (a regression between versions, a CBPE estimate that parted from the
realised figure) that was not in the previous summary is an event: it is appended to the
audit log (``outcome.regression`` or ``outcome.estimate_parted``) in the same transaction
as the summary, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from modelplane.controlplane.loop import every
from modelplane.observe.outcome_report import OutcomeReport, outcomes_by_version
from modelplane.observe.outcomes import OutcomeStore
from modelplane.store import audit
from modelplane.store.db import write_session
from modelplane.store.resources import put_status_row
from modelplane.store.schema import ResourceRow
from modelplane.types import Clock, SystemClock

__all__ = ["ACTOR", "KIND", "OutcomeRecorder", "summary"]

log = logging.getLogger(__name__)

KIND = "OutcomeReport"
ACTOR = "outcome-recorder"


def summary(report: OutcomeReport, now: float) -> dict[str, Any]:
    """What ``status`` shows of a report: per version its labels and main metric, and the
    events (each with a stable ``key`` so an event is recorded once)."""
    metric = report.metric
    events = [
        {"key": f"regression:{r.baseline}->{r.candidate}", "action": "outcome.regression",
         "version": r.candidate, **r.to_dict()}
        for r in report.regressions
    ] + [
        {"key": f"parted:{v.version}", "action": "outcome.estimate_parted", "version": v.version,
         "estimated": v.metrics.get("estimated_accuracy"), "realised": v.metrics.get("accuracy")}
        for v in report.versions if v.estimate_parted
    ]  # fmt: skip
    return {
        "at": now,
        "task": report.task,
        "metric": metric,
        "versions": [
            {"version": v.version, "labelled": v.labelled_rows, "coverage": v.coverage,
             "value": v.metrics.get(metric) if metric else None,
             "label_latency_p50_s": v.label_latency_p50_s}
            for v in report.versions
        ],
        "events": events,
        "alerts": report.alerts,
        "notes": report.notes,
    }  # fmt: skip


class OutcomeRecorder:
    """Writes ``OutcomeReport`` resources and records new outcome events; see the module.

    A report reads every labelled answer of the endpoint (seconds at 100,000 labels), so
    an endpoint is reported again only when outcomes arrived since its last report, or
    after ``refresh_s`` (coverage moves with every answer, slowly)."""

    def __init__(
        self, engine: Engine, *, clock: Clock | None = None, refresh_s: float = 300.0
    ) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self._clock = clock or SystemClock()
        self._reported: dict[str, tuple[tuple[int, float], float]] = {}
        """Per endpoint: the outcomes' (count, latest arrival) last reported, and when."""

    async def run(self, stop: asyncio.Event, interval_s: float = 30.0) -> None:
        await every(stop, interval_s, self.record, log=log, what="outcome recording")

    async def record(self) -> dict[str, dict[str, Any]]:
        """One pass, off the event loop; the summaries written, by endpoint."""
        return await asyncio.to_thread(self.record_now)

    def record_now(self) -> dict[str, dict[str, Any]]:
        now = self._clock.wall()
        due = {
            name: seen
            for name, seen in OutcomeStore(self.engine).arrivals().items()
            if self._due(name, seen, now)
        }
        documents = {name: summary(outcomes_by_version(self.engine, name), now) for name in due}
        if documents:
            self._write(documents, now)
        self._reported |= {name: (seen, now) for name, seen in due.items()}
        return documents

    def _due(self, name: str, seen: tuple[int, float], now: float) -> bool:
        last = self._reported.get(name)
        return last is None or last[0] != seen or now - last[1] >= self.refresh_s

    def _write(self, documents: Mapping[str, dict[str, Any]], now: float) -> None:
        at = datetime.fromtimestamp(now, UTC)
        query = select(ResourceRow).where(
            ResourceRow.kind == KIND, ResourceRow.name.in_(list(documents))
        )
        with write_session(self.engine) as session:
            rows = {row.name: row for row in session.scalars(query).all()}
            for name, document in documents.items():
                row = rows.get(name)
                seen = {e["key"] for e in ((row.status or {}).get("events", []) if row else [])}
                for event in document["events"]:
                    if event["key"] not in seen:
                        audit.append(session, _event(name, event, at))
                put_status_row(
                    session,
                    row,
                    kind=KIND,
                    name=name,
                    spec={"endpoint": name},
                    status=document,
                    at=at,
                )


def _event(endpoint: str, event: Mapping[str, Any], at: datetime) -> audit.AuditEvent:
    if event["action"] == "outcome.regression":
        reason = (
            f"{event['candidate']} is worse than {event['baseline']} on {event['metric']}"
            f" with {event['confidence']:.0%} confidence"
        )
    else:
        reason = f"the CBPE estimate of {event['version']} parted from its realised accuracy"
    subject = f"Endpoint/{endpoint}"
    after = {k: v for k, v in event.items() if k != "action"}
    return audit.AuditEvent(ACTOR, event["action"], subject, at, reason, None, after)

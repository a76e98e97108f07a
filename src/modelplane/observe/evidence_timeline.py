"""A version's life read back from the audit log: when it served where, and its rollouts.

Pure functions over :class:`~modelplane.store.audit.AuditRecord` lists (oldest first), so
the evidence pack's reading of the log is tested without a store. Two stories are told:

* **serving periods**: every ``endpoint.apply`` records the whole spec after it, routes and
  ``pins`` (what each alias resolved to at apply), so replaying them gives, per endpoint, the
  spans in which the version carried weight or a shadow, with the contract then in force;
* **rollouts**: a ``Rollout/<endpoint>`` resource is re-applied for every command and the
  controller appends ``rollout.*`` events for every action and decision. A new rollout starts
  where the applied spec's ``requested_at`` changes; every event on the subject from there to
  the next start belongs to it, in chain order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelplane.store.audit import AuditRecord

__all__ = [
    "Period",
    "RolloutStory",
    "decision_row",
    "rollouts_of",
    "serving_periods",
]


@dataclass(frozen=True, slots=True)
class Period:
    """A span in which ``ref`` carried traffic (or a shadow copy of it) on an endpoint."""

    endpoint: str
    start: datetime
    end: datetime | None
    """``None``: still so."""
    weight_percent: float
    shadow_percent: float
    generation: int
    spec: Mapping[str, Any] = field(repr=False)
    """The endpoint spec in force (contract, team, tier)."""


def _share(spec: Mapping[str, Any], ref: str) -> tuple[float, float]:
    """The percent of the endpoint's traffic ``ref`` answers, and the percent it shadows."""
    pins: Mapping[str, str] = spec.get("pins") or {}
    routes = spec.get("routes") or []
    total = sum(float(r.get("weight", 100.0)) for r in routes) or 1.0
    weight = sum(
        float(r.get("weight", 100.0))
        for r in routes
        if pins.get(str(r.get("model")), str(r.get("model"))) == ref
    )
    shadow = sum(
        float(s.get("percent", 100.0))
        for s in spec.get("shadows") or []
        if pins.get(str(s.get("model")), str(s.get("model"))) == ref
    )
    return round(100.0 * weight / total, 4), round(min(shadow, 100.0), 4)


def serving_periods(events: Iterable[AuditRecord], ref: str) -> list[Period]:
    """Every span in which ``ref`` served or shadowed an endpoint, in order of start.

    ``events`` are ``endpoint.apply`` and ``endpoint.delete`` events, oldest first.
    """
    open_at: dict[str, tuple[datetime, float, float, int, Mapping[str, Any]]] = {}
    generation: dict[str, int] = {}
    out: list[Period] = []
    for event in events:
        endpoint = event.subject.partition("/")[2]
        current = open_at.pop(endpoint, None)
        if current is not None:
            start, weight, shadow, gen, spec = current
            out.append(Period(endpoint, start, event.at, weight, shadow, gen, spec))
        if event.action.endswith(".delete") or not isinstance(event.after, dict):
            generation.pop(endpoint, None)
            continue
        generation[endpoint] = generation.get(endpoint, 0) + 1
        weight, shadow = _share(event.after, ref)
        if weight > 0 or shadow > 0:
            open_at[endpoint] = (event.at, weight, shadow, generation[endpoint], event.after)
    for endpoint, (start, weight, shadow, gen, spec) in open_at.items():
        out.append(Period(endpoint, start, None, weight, shadow, gen, spec))
    # Neighbouring spans of one endpoint at the same share are one span to a reader.
    return sorted(_merged(out), key=lambda p: (p.start, p.endpoint))


def _merged(periods: list[Period]) -> list[Period]:
    merged: list[Period] = []
    for period in sorted(periods, key=lambda p: (p.endpoint, p.start)):
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.endpoint == period.endpoint
            and last.end == period.start
            and (last.weight_percent, last.shadow_percent)
            == (period.weight_percent, period.shadow_percent)
            and last.spec.get("contract") == period.spec.get("contract")
        ):
            merged[-1] = Period(
                last.endpoint, last.start, period.end, last.weight_percent,
                last.shadow_percent, period.generation, period.spec,
            )  # fmt: skip
        else:
            merged.append(period)
    return merged


@dataclass(frozen=True, slots=True)
class RolloutStory:
    """One rollout of an endpoint, with every audit event that belongs to it."""

    endpoint: str
    to: str
    stable: str
    started_at: datetime
    started_by: str
    reason: str
    spec: Mapping[str, Any]
    events: tuple[AuditRecord, ...]

    @property
    def phase(self) -> str:
        """The last phase the log recorded (``pending`` before the controller's first pass)."""
        for event in reversed(self.events):
            if isinstance(event.after, dict) and "phase" in event.after:
                return str(event.after["phase"])
        return "pending"

    def role(self, ref: str, resolve: Mapping[str, str]) -> str | None:
        """``to`` when the rollout moved traffic to ``ref``, ``from`` when away from it."""
        if resolve.get(self.to, self.to) == ref:
            return "to"
        if resolve.get(self.stable, self.stable) == ref:
            return "from"
        return None

    def commands(self) -> list[dict[str, Any]]:
        """The commands people gave (pause, resume, promote, rollback), as recorded."""
        for event in reversed(self.events):
            if event.action == "rollout.apply" and isinstance(event.after, dict):
                return [dict(c) for c in event.after.get("commands") or []]
        return []


def rollouts_of(events: Sequence[AuditRecord]) -> list[RolloutStory]:
    """Split the events of ``Rollout/*`` subjects (oldest first) into rollouts."""
    stories: list[RolloutStory] = []
    building: dict[str, list[AuditRecord]] = {}
    first: dict[str, AuditRecord] = {}

    def close(endpoint: str) -> None:
        start = first.pop(endpoint, None)
        found = building.pop(endpoint, [])
        if start is None or not isinstance(start.after, dict):
            return
        spec = start.after.get("rollout") or {}
        stories.append(
            RolloutStory(
                endpoint=endpoint,
                to=str(spec.get("to", "")),
                stable=str(start.after.get("stable", "")),
                started_at=start.at,
                started_by=start.actor,
                reason=start.reason,
                spec=spec,
                events=tuple(found),
            )
        )

    for event in events:
        endpoint = event.subject.partition("/")[2]
        if event.action == "rollout.apply" and _starts(event):
            close(endpoint)
            first[endpoint] = event
        elif event.action == "rollout.delete":
            building.setdefault(endpoint, []).append(event)
            close(endpoint)
            continue
        if endpoint in first:
            building.setdefault(endpoint, []).append(event)
    for endpoint in list(first):
        close(endpoint)
    return sorted(stories, key=lambda s: s.events[0].seq)


def _starts(event: AuditRecord) -> bool:
    after, before = event.after, event.before
    if not isinstance(after, dict):
        return False
    if not isinstance(before, dict):
        return True
    return bool(after.get("requested_at") != before.get("requested_at"))


def decision_row(event: AuditRecord) -> dict[str, Any]:
    """An audit event of a rollout as the pack lists it: where it was, what it read."""
    after = event.after if isinstance(event.after, dict) else {}
    kind = event.action.removeprefix("rollout.")
    if event.action == "rollout.apply":
        before = event.before if isinstance(event.before, dict) else {}
        given = (after.get("commands") or [])[len(before.get("commands") or []) :]
        kind = "command " + ", ".join(str(c.get("command")) for c in given) if given else "start"
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "kind": kind,
        "reason": event.reason,
        "phase": after.get("event_phase", after.get("phase")),
        "step": after.get("step"),
        "weights": after.get("weights"),
        "gates": after.get("gates") or [],
        "hash": event.hash,
    }

"""Past generations of a declarative resource, read back from the audit log.

The resource table keeps only the current spec; every change that bumped a generation
also appended an audit event with the spec after it (``<kind>.apply``), in the same
transaction. Replaying those events oldest first gives every generation: a create is
generation 1, each later apply the next, and a delete ends the resource's life (a new
create starts again at 1, as the store does), so only the current life is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelplane.errors import NotFound
from modelplane.registry.service import Registry

__all__ = ["MAX_EVENTS", "Generation", "generation", "generations"]

MAX_EVENTS = 100_000
"""Bounds how many events of one resource are read back."""


@dataclass(frozen=True, slots=True)
class Generation:
    generation: int
    at: datetime
    actor: str
    reason: str
    spec: dict[str, Any]


def generations(registry: Registry, kind: str, name: str) -> list[Generation]:
    """Every generation of ``kind/name`` in its current life, oldest first."""
    events = registry.audit_events(subject=f"{kind}/{name}", limit=MAX_EVENTS)
    out: list[Generation] = []
    for event in reversed(events):
        if event.action == f"{kind.lower()}.delete":
            out = []
        elif event.action == f"{kind.lower()}.apply" and isinstance(event.after, dict):
            out.append(Generation(len(out) + 1, event.at, event.actor, event.reason, event.after))
    return out


def generation(registry: Registry, kind: str, name: str, number: int) -> Generation:
    """One generation; a negative ``number`` counts back from the newest (-1 = current)."""
    found = generations(registry, kind, name)
    if not found:
        raise NotFound(f"{kind}/{name} has no recorded generations")
    index = number - 1 if number > 0 else len(found) + number
    if not 0 <= index < len(found):
        raise NotFound(f"{kind}/{name} has generations 1..{len(found)}, not {number}")
    return found[index]

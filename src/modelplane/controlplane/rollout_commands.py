"""Rollout commands people give, light enough for a CLI process.

``record_command`` appends ``pause``, ``resume``, ``promote`` or ``rollback`` to the
``Rollout`` resource for the controller (refused at once when the state machine would
refuse it); ``rollback_traffic`` puts all of the endpoint's traffic on stable right away, so
traffic moves before the controller's next pass. Both write through the resource store only
(one transaction each, audited): a ``modelplane rollback`` imports no registry and checks no
package, since stable was served, and checked, before the rollout began.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from modelplane.core.rollout import Command, Phase, RolloutState, command
from modelplane.errors import Conflict
from modelplane.spec.rollout import RolloutSpec
from modelplane.store.resources import Resource, ResourceStore

__all__ = ["KIND", "Recorded", "Traffic", "pending_state", "record_command", "rollback_traffic"]

KIND = "Rollout"


@dataclass(frozen=True, slots=True)
class Traffic:
    """The routes (``model -> weight``) and shadows (``model -> percent``) of an endpoint."""

    routes: tuple[tuple[str, float], ...]
    shadows: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, spec: RolloutSpec, stable: str, state: RolloutState) -> Traffic:
        """What ``state`` says the endpoint must route; the canary stays routed (weight 0,
        workers warm) from its first scale request until the rollout ends."""
        if state.phase is Phase.PROMOTED:
            return cls(((spec.to, 100.0),))
        if state.phase in (Phase.ROLLED_BACK, Phase.FAILED):
            return cls(((stable, 100.0),))
        stable_weight, canary_weight = state.weights
        routes: tuple[tuple[str, float], ...] = ((stable, stable_weight),)
        if canary_weight > 0 or state.canary_scaled_for > 0 or state.shadow_percent > 0:
            routes += ((spec.to, canary_weight),)
        shadows = ((spec.to, state.shadow_percent),) if state.shadow_percent > 0 else ()
        return cls(routes, shadows)

    def differs(self, endpoint: Mapping[str, Any]) -> bool:
        routes = tuple((r["model"], float(r.get("weight", 100.0))) for r in endpoint["routes"])
        shadows = tuple(
            (s["model"], float(s.get("percent", 100.0))) for s in endpoint.get("shadows", ())
        )
        return (routes, shadows) != (self.routes, self.shadows)

    def document(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **endpoint,
            "routes": [{"model": m, "weight": w} for m, w in self.routes],
            "shadows": [{"model": m, "percent": p} for m, p in self.shadows],
        }


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a command did: the state it leads to, and whether it changed anything (a
    repeated command, or ``resume`` of a rollout that is not paused, changes nothing)."""

    state: RolloutState
    changed: bool


def record_command(
    engine: Engine,
    endpoint: str,
    cmd: Command,
    *,
    actor: str,
    now: float,
    reason: str = "",
) -> Recorded:
    """Record ``cmd`` for the controller; what it leads to (Conflict if it cannot, with a
    hint of what to do instead). A command that changes nothing is not recorded."""
    resources = ResourceStore(engine)
    for _ in range(3):
        resource = resources.get(KIND, endpoint)
        state = pending_state(resource)
        try:
            after = command(state, cmd, now, by=actor)
        except Conflict as exc:
            raise Conflict(f"{exc.message}{_hint(resource, state, cmd)}") from None
        if after == state:
            return Recorded(state, changed=False)
        commands = [*resource.spec["commands"], {"command": cmd.value, "by": actor, "at": now}]
        spec = {**resource.spec, "commands": commands}
        why = f"{cmd.value} rollout" + (f": {reason}" if reason else "")
        try:
            resources.apply(
                KIND,
                endpoint,
                spec,
                actor=actor,
                reason=why,
                expected_generation=resource.generation,
            )
        except Conflict:
            continue  # the controller or another person wrote meanwhile: reread
        return Recorded(after, changed=True)
    raise Conflict(f"rollout of '{endpoint}' keeps changing; try again")


def _hint(resource: Resource, state: RolloutState, cmd: Command) -> str:
    """What to do instead of a command the rollout's phase refuses."""
    endpoint, stable = resource.name, resource.spec.get("stable", "")
    to = resource.spec.get("rollout", {}).get("to", "")
    if state.phase is Phase.PROMOTED and cmd is Command.ROLLBACK:
        return (
            f"; it already moved all traffic to {to}. To go back, roll out the previous"
            f" version: modelplane rollout {endpoint} --to {stable}"
        )
    if state.phase in (Phase.ROLLED_BACK, Phase.FAILED):
        return f"; it ended and {stable} serves. Start a new one: modelplane rollout {endpoint}"
    if state.phase is Phase.PROMOTED:
        return f"; it ended and {to} serves. Start a new one: modelplane rollout {endpoint}"
    return ""


def pending_state(resource: Resource) -> RolloutState:
    """The stored state with the commands the controller has not seen yet applied."""
    status = resource.status or {}
    state = RolloutState.from_dict(status["state"]) if status.get("state") else RolloutState()
    for entry in resource.spec["commands"][status.get("commands_seen", 0) :]:
        with contextlib.suppress(Conflict):
            state = command(state, Command(entry["command"]), entry["at"], by=entry["by"])
    return state


def rollback_traffic(engine: Engine, endpoint: str, *, actor: str, reason: str = "") -> bool:
    """All of ``endpoint``'s traffic on the rollout's stable route, now; False when it
    already was. Retried when the endpoint changes under it (the controller, an autoscaler)."""
    resources = ResourceStore(engine)
    traffic = Traffic(((resources.get(KIND, endpoint).spec["stable"], 100.0),))
    for _ in range(3):
        current = resources.get("Endpoint", endpoint)
        if not traffic.differs(current.spec):
            return False
        try:
            resources.apply(
                "Endpoint",
                endpoint,
                traffic.document(current.spec),
                actor=actor,
                reason="rollback: all traffic to stable" + (f": {reason}" if reason else ""),
                expected_generation=current.generation,
            )
        except Conflict:
            continue
        return True
    raise Conflict(f"endpoint '{endpoint}' keeps changing; try the rollback again")

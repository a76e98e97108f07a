"""The rollout controller: drive ``core.rollout.step`` over the store and the live traffic.

A ``Rollout`` resource (named after its endpoint) holds the :class:`RolloutSpec`, the stable
route it started from and the commands people gave; its status holds the
:class:`RolloutState`, the evidence baseline of the current step and what is done. Each
pass, per rollout that is not settled:

1. apply commands not yet seen (``pause``, ``resume``, ``promote``, ``rollback``);
2. build the snapshot: the new version's and stable's readiness from the serving target,
   and the window's evidence (cumulative route counters minus the step's baseline). In a
   step where stable answers nothing (canary at 100%), stable's side of the comparison is
   what it answered since the rollout's first step: without it the relative gates could
   never conclude and a canary rollout could never promote;
3. call ``step``; persist the new state and an audit event per action and per decision (with
   the gate readings) in one transaction, *before* acting. While a step holds, its gates'
   readings on the window so far are kept in the status too (``readings``), for ``status``;
4. make the endpoint's routes what the state says (level-triggered: re-applying the same
   routes records nothing, so a restarted controller repeats nothing), and after a promotion
   move the ``champion`` alias once.

The data plane is reached only through :class:`RolloutEvidence`, which
``system.gateway_views`` adapts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from modelplane.controlplane.apply import Applier
from modelplane.controlplane.loop import every
from modelplane.controlplane.rollout_commands import (
    KIND,
    Traffic,
    record_command,
    rollback_traffic,
)
from modelplane.controlplane.rollout_records import (
    arm_from_dict,
    arm_to_dict,
    audit_events,
    shadow_from_dict,
    shadow_to_dict,
    window,
)
from modelplane.core.gates import (
    ArmStats,
    CustomResolver,
    GateResult,
    ShadowStats,
    evaluate_gates,
)
from modelplane.core.outcomes import Comparison, Metric
from modelplane.core.rollout import (
    TERMINAL,
    Command,
    Phase,
    RolloutSnapshot,
    RolloutState,
    command,
    step,
)
from modelplane.errors import Conflict, NotFound
from modelplane.observe.outcome_report import compare_versions
from modelplane.observe.outcomes import OutcomeStore
from modelplane.registry.service import Registry
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.rollout import OutcomeGate, RolloutSpec, ShadowStep
from modelplane.store import audit
from modelplane.store.db import write_session
from modelplane.store.resources import Resource, ResourceStore
from modelplane.store.schema import ResourceRow
from modelplane.types import Clock, SystemClock

__all__ = [
    "CONTROLLER",
    "KIND",
    "PROMOTED_ALIAS",
    "RolloutController",
    "RolloutEvidence",
    "Traffic",
    "apply_traffic",
    "record_command",
    "rollback_traffic",
    "start_rollout",
]

log = logging.getLogger(__name__)

CONTROLLER = "rollout-controller"
"""The actor of what the controller does by itself."""
PROMOTED_ALIAS = "champion"


class RolloutEvidence(Protocol):
    """What the controller reads from the data plane (``system.gateway_views`` adapts the
    gateway, summed over every gateway process by ``system.gateway_sums``)."""

    def route_ready(self, endpoint: str, model: str) -> bool:
        """The route to ``model`` (as written in the endpoint) has a ready replica."""
        ...

    def route_stats(self, endpoint: str, model: str) -> ArmStats | None:
        """Cumulative counters of the route to ``model``; ``None`` when it is not served."""
        ...

    def shadow_stats(self, endpoint: str, model: str) -> ShadowStats | None:
        """Cumulative comparisons of the shadow ``model`` with the answers callers got;
        ``None`` when it is not a shadow of the endpoint."""
        ...


def apply_traffic(
    registry: Registry, endpoint: str, traffic: Traffic, *, actor: str, reason: str
) -> bool:
    """Re-apply ``endpoint`` with ``traffic`` (checked like any apply); False if unchanged."""
    resources = ResourceStore(registry.engine)
    current = resources.get("Endpoint", endpoint).spec
    if not traffic.differs(current):
        return False
    applier = Applier(registry, resources, actor=actor)
    applier.apply_all([traffic.document(current)], reason=reason)
    return True


def start_rollout(
    registry: Registry, spec: RolloutSpec, *, actor: str, now: float, reason: str = ""
) -> Resource:
    """Record a new rollout of ``spec.endpoint``; Conflict while another one is running."""
    resources = ResourceStore(registry.engine)
    endpoint = Endpoint.model_validate(resources.get("Endpoint", spec.endpoint).spec)
    with contextlib.suppress(NotFound):
        previous = resources.get(KIND, spec.endpoint)
        phase = (previous.status or {}).get("state", {}).get("phase", Phase.PENDING.value)
        if Phase(phase) not in TERMINAL:
            going = f"{previous.spec.get('stable')} -> {previous.spec['rollout'].get('to')}"
            raise Conflict(
                f"a rollout of '{spec.endpoint}' is in progress ({going}, {phase}); finish"
                f" it first: modelplane promote|rollback {spec.endpoint}"
            )
    live = [r.model for r in endpoint.routes if r.weight > 0]
    if len(live) != 1:
        raise Conflict(
            f"endpoint '{spec.endpoint}' routes to {len(live)} versions"
            f" ({', '.join(live)}); a rollout starts from exactly one: apply the endpoint"
            " with all weight on one route first"
        )
    if live[0] == spec.to or registry.get(live[0]).ref == registry.get(spec.to).ref:
        raise Conflict(f"endpoint '{spec.endpoint}' already serves {spec.to}")
    document = {
        "rollout": spec.model_dump(mode="json"),
        "stable": live[0],
        "requested_at": now,
        "commands": [],
    }
    applied = resources.apply(KIND, spec.endpoint, document, actor=actor, reason=reason)
    status = {"state": RolloutState().to_dict(), "commands_seen": 0}
    resources.set_status(KIND, spec.endpoint, status)
    return applied.resource


class RolloutController:
    """Reconciles ``Rollout`` resources; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        evidence: RolloutEvidence,
        *,
        clock: Clock | None = None,
        resolver: CustomResolver | None = None,
    ) -> None:
        self.registry = registry
        self.resources = ResourceStore(registry.engine)
        self.evidence = evidence
        self._clock = clock or SystemClock()
        self._resolver = resolver
        self._outcome_readings: dict[tuple[str, float], tuple[Any, dict[str, Comparison]]] = {}
        """Per (endpoint, since): the outcomes' arrival mark and the comparisons it gave."""

    async def reconcile(self) -> None:
        """One pass over every unsettled rollout; safe at any time, any number of times."""
        for resource in await asyncio.to_thread(self.resources.list, KIND):
            if not (resource.status or {}).get("settled"):
                await asyncio.to_thread(self.reconcile_one, resource.name)

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged."""
        await every(stop, interval_s, self.reconcile, log=log, what="rollout reconcile")

    def reconcile_one(self, name: str) -> RolloutState:
        """Move one rollout as far as it can go now; returns its state."""
        resource = self.resources.get(KIND, name)
        spec = RolloutSpec.model_validate(resource.spec["rollout"])
        stable: str = resource.spec["stable"]
        status = dict(resource.status or {})
        now = self._clock.wall()
        state = RolloutState.from_dict(status["state"]) if status.get("state") else RolloutState()
        before = state
        commands = resource.spec["commands"]
        for entry in commands[status.get("commands_seen", 0) :]:
            state = self._command(state, entry)
        arms = self._arms(spec, stable)
        shadow = self.evidence.shadow_stats(spec.endpoint, spec.to)
        snapshot = self._snapshot(spec, stable, state, status, arms, shadow)
        decision, new = step(spec, snapshot, now, state, resolver=self._resolver)
        if new.step_started_at is not None and new.step_started_at != state.step_started_at:
            status["baseline"] = {
                "at": new.step_started_at,
                **{arm: arm_to_dict(stats) for arm, stats in arms.items()},
                "shadow": shadow_to_dict(shadow),
            }
            status.setdefault("reference", status["baseline"])
        status |= {"state": new.to_dict(), "commands_seen": len(commands)}
        status["readings"] = self._readings(spec, snapshot, state, new, decision.gates, now)
        events = audit_events(name, before, new, decision, actor=CONTROLLER, now=now)
        if not self._persist(name, resource.generation, status, events):
            return state  # the resource changed under this pass; the next pass redoes it
        self._act(spec, stable, new, status, resource.generation)
        return new

    def _command(self, state: RolloutState, entry: Mapping[str, Any]) -> RolloutState:
        try:
            return command(state, Command(entry["command"]), float(entry["at"]), by=entry["by"])
        except Conflict as exc:
            # recorded after a transition the person did not see: refused, and said so
            log.warning("rollout command %s refused: %s", entry["command"], exc.message)
            return state

    def _arms(self, spec: RolloutSpec, stable: str) -> dict[str, ArmStats | None]:
        return {
            "canary": self.evidence.route_stats(spec.endpoint, spec.to),
            "stable": self.evidence.route_stats(spec.endpoint, stable),
        }

    def _snapshot(
        self,
        spec: RolloutSpec,
        stable: str,
        state: RolloutState,
        status: Mapping[str, Any],
        arms: Mapping[str, ArmStats | None],
        shadow: ShadowStats | None,
    ) -> RolloutSnapshot:
        canary_ready = self.evidence.route_ready(spec.endpoint, spec.to)
        stats = None
        baseline = status.get("baseline") or {}
        started = state.step_started_at
        if started is not None and baseline.get("at") == started:
            stats = window(
                arms["canary"],
                arm_from_dict(baseline.get("canary")),
                arms["stable"],
                arm_from_dict(baseline.get("stable")),
                since=started,
                stable_reference=arm_from_dict((status.get("reference") or {}).get("stable")),
                shadow=shadow,
                shadow_base=shadow_from_dict(baseline.get("shadow")),
            )
        endpoint = Endpoint.model_validate(self.resources.get("Endpoint", spec.endpoint).spec)
        if stats is not None and any(isinstance(g, OutcomeGate) for g in spec.gates):
            since = float(status.get("reference", {}).get("at") or started or 0.0)
            stats = replace(stats, outcomes=self._outcomes(spec, endpoint, stable, since))
        return RolloutSnapshot(
            canary_ready_percent=100.0 if canary_ready else 0.0,
            stable_ready=self.evidence.route_ready(spec.endpoint, stable),
            stats=stats,
            slo=endpoint.contract.slo,
        )

    def _outcomes(
        self, spec: RolloutSpec, endpoint: Endpoint, stable: str, since: float
    ) -> dict[str, Comparison]:
        """Each ``outcome`` gate's comparison: labels of rows answered since the rollout's
        first step, the new version's against stable's (same period, same callers)."""
        # A comparison reads every label since the rollout began: again only when labels
        # came, or 5 s passed (a label can arrive before its answer is written).
        arrival = OutcomeStore(self.registry.engine).arrival(spec.endpoint)
        mark = (arrival, spec.gates, int(self._clock.monotonic() // 5))
        kept = self._outcome_readings.get((spec.endpoint, since))
        if kept is not None and kept[0] == mark:
            return kept[1]
        versions = [self.registry.get(endpoint.pinned(ref)).ref for ref in (stable, spec.to)]
        found = {
            gate.label: compare_versions(
                self.registry.engine,
                spec.endpoint,
                versions[0],
                versions[1],
                metric=Metric(gate.metric),
                score=gate.score,
                answered_since=since,
                confidence=gate.confidence,
                tolerance=gate.tolerance,
            )
            for gate in spec.gates
            if isinstance(gate, OutcomeGate)
        }
        # one entry per endpoint: its rollout's, the latest rollout's
        self._outcome_readings = {
            key: value for key, value in self._outcome_readings.items() if key[0] != spec.endpoint
        }
        self._outcome_readings[spec.endpoint, since] = (mark, found)
        return found

    def _readings(
        self,
        spec: RolloutSpec,
        snapshot: RolloutSnapshot,
        before: RolloutState,
        new: RolloutState,
        judged: Sequence[GateResult],
        now: float,
    ) -> dict[str, Any] | None:
        """The gates' readings on the current step's window so far, for ``status``: a step
        is judged only when its hold ends, and people want to see it coming."""
        same_step = new.step == before.step and new.step_started_at == before.step_started_at
        if new.phase not in (Phase.SHADOW, Phase.CANARY) or not same_step:
            return None
        if new.step_started_at is None or snapshot.stats is None:
            return None
        results = tuple(judged) or evaluate_gates(
            spec.gates,
            snapshot.stats,
            shadow_step=isinstance(spec.steps[new.step], ShadowStep),
            slo=snapshot.slo,
            resolver=self._resolver,
        )
        return {"step": new.step + 1, "at": now, "since": new.step_started_at,
                "gates": [result.to_dict() for result in results]}  # fmt: skip

    def _persist(
        self, name: str, generation: int, status: dict[str, Any], events: Sequence[audit.AuditEvent]
    ) -> bool:
        """The state and its audit events commit together, before anything is acted on;
        False (nothing written) when a command or a new rollout landed during the pass."""
        with write_session(self.registry.engine) as session:
            row = session.get(ResourceRow, (KIND, name), with_for_update=True)
            if row is None or row.generation != generation:
                return False
            row.status = status
            for event in events:
                audit.append(session, event)
            return True

    def _act(
        self,
        spec: RolloutSpec,
        stable: str,
        state: RolloutState,
        status: dict[str, Any],
        generation: int,
    ) -> None:
        traffic = Traffic.of(spec, stable, state)
        why = f"rollout of {spec.to}: {state.phase.value}, step {state.step + 1}"
        if self.resources.get(KIND, spec.endpoint).generation != generation:
            return  # a command landed after this pass read it: its pass sets the traffic
        apply_traffic(self.registry, spec.endpoint, traffic, actor=CONTROLLER, reason=why)
        if state.phase is Phase.PROMOTED and not status.get("alias_moved"):
            version = self.registry.get(spec.to)
            self.registry.set_alias(
                version.name,
                PROMOTED_ALIAS,
                version.version,
                actor=CONTROLLER,
                reason=f"rollout of {spec.endpoint} promoted {version.ref}",
            )
            status["alias_moved"] = True
        if state.phase in TERMINAL:
            status["settled"] = True
            self.resources.set_status(KIND, spec.endpoint, status)

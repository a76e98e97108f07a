"""Degradation, live: measured overload drives ``core.degrade``; its steps are carried out.

Overload is demand over capacity across the served endpoints: requests in flight (the
same :class:`ConcurrencyEvidence` the autoscaler reads) over ready replicas times each
endpoint's target concurrency; 1.0 means every replica holds its target. Each pass:

1. measure overload;
2. call ``degrade`` under the applied policy's ``degradation`` (hysteresis, hold time);
   a change of level is one audit event (``degradation.enter`` / ``degradation.exit``,
   subject ``Policy/<name>``, the overload and active steps in ``after``);
3. carry out what the active steps mean and this process can do: ``freeze-canaries``
   records a ``pause`` (actor ``degrader``) on every rollout that is moving, and once the
   step is undone a ``resume`` on each rollout whose last command is that pause. This is
   level-triggered on the store, so a restarted degrader still resumes what it paused.
   ``shed-batch`` and ``fallbacks-for-standard`` go to the gateway (a
   :class:`DegradationTarget`) every pass: those tiers answer 429, or their fallback.

Nothing runs unless a policy was applied: the built-in default lists every step, and an
embedded system nobody configured should not start freezing rollouts by itself. The batch
steps, ``pause-batch-admission`` and ``preempt-borrowed-batch``, are read by the job
controller each pass (``controlplane.jobs.degrader_effects``): the queue admits no batch
shard, and preempts borrowed ones, while they are active.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from modelplane.controlplane.autoscaler import ConcurrencyEvidence, scale_config
from modelplane.controlplane.loop import every
from modelplane.controlplane.rollout_commands import KIND as ROLLOUT
from modelplane.controlplane.rollout_commands import record_command
from modelplane.core.degrade import DegradeDecision, DegradeSnapshot, DegradeState, degrade
from modelplane.core.rollout import Command, Phase
from modelplane.errors import Conflict, InvalidSpec, NotFound
from modelplane.registry.service import Registry
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.policy import Policy
from modelplane.store import audit
from modelplane.store.db import write_session
from modelplane.store.resources import Resource, ResourceStore
from modelplane.types import Clock, SystemClock

__all__ = ["ACTOR", "DegradationTarget", "Degrader", "measure_overload"]

log = logging.getLogger(__name__)

ACTOR = "degrader"
_MOVING = frozenset({Phase.PENDING, Phase.SHADOW, Phase.CANARY})


class DegradationTarget(Protocol):
    """The data plane's side of degradation (the gateway)."""

    def degrade(self, shed_tiers: frozenset[str], fallback_tiers: frozenset[str]) -> None:
        """Answer 429 for ``shed_tiers`` and the fallback for ``fallback_tiers`` (where
        there is one) until called again; empty sets end it."""
        ...


@dataclass(frozen=True, slots=True)
class _Applied:
    name: str
    policy: Policy


def measure_overload(
    endpoints: list[Endpoint], policy: Policy, evidence: ConcurrencyEvidence
) -> float:
    """Requests in flight over what the ready replicas should hold, across endpoints."""
    demand, capacity = 0.0, 0.0
    for endpoint in endpoints:
        load = evidence.load(endpoint.name)
        if load is None:
            continue
        try:
            target = scale_config(endpoint, policy).target_concurrency
        except InvalidSpec:
            target = policy.autoscaling.target_concurrency
        demand += load.concurrency
        # A starting endpoint counts one replica: its queue is load, not infinite overload.
        capacity += max(load.ready_replicas, 1) * target
    return demand / capacity if capacity else 0.0


class Degrader:
    """Runs ``degrade`` over the live system; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        evidence: ConcurrencyEvidence,
        *,
        target: DegradationTarget | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.registry = registry
        self.resources = ResourceStore(registry.engine)
        self.evidence = evidence
        self.target = target
        self._clock = clock or SystemClock()
        self.state = DegradeState()

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged."""
        await every(stop, interval_s, self.reconcile, log=log, what="degradation pass")

    async def reconcile(self) -> DegradeDecision | None:
        """One pass: measure, decide, act; None when no policy was applied."""
        found = await asyncio.to_thread(self._read)
        if found is None:
            return None
        applied, endpoints = found
        overload = measure_overload(endpoints, applied.policy, self.evidence)
        decision = await asyncio.to_thread(self.reconcile_with, applied, overload)
        if self.target is not None:  # on the loop: the gateway's handler lives there
            effects = decision.effects
            self.target.degrade(effects.shed_tiers, effects.fallback_tiers)
        return decision

    def _read(self) -> tuple[_Applied, list[Endpoint]] | None:
        policies = self.resources.list("Policy")
        chosen = next(
            (r for r in policies if r.name == "default"), policies[0] if policies else None
        )
        if chosen is None:
            return None
        endpoints = [Endpoint.model_validate(r.spec) for r in self.resources.list("Endpoint")]
        return _Applied(chosen.name, Policy.model_validate(chosen.spec)), endpoints

    def reconcile_with(self, applied: _Applied, overload: float) -> DegradeDecision:
        config = applied.policy.degradation
        now, before = self._clock.monotonic(), self.state.level
        decision, self.state = degrade(DegradeSnapshot(overload), config, now, self.state)
        if decision.changed:
            self._record(applied.name, decision, overload, entering=decision.level > before)
        self._freeze(decision.effects.freeze_canaries)
        return decision

    def _record(
        self, policy: str, decision: DegradeDecision, overload: float, *, entering: bool
    ) -> None:
        effects = decision.effects
        after: dict[str, Any] = {
            "level": decision.level,
            "active": [step.value for step in decision.active],
            "overload": round(overload, 4),
            "effects": {
                "paused_tiers": sorted(effects.paused_tiers),
                "shed_tiers": sorted(effects.shed_tiers),
                "fallback_tiers": sorted(effects.fallback_tiers),
                "preempt_borrowed_tiers": sorted(effects.preempt_borrowed_tiers),
                "freeze_canaries": effects.freeze_canaries,
            },
        }
        action = "degradation.enter" if entering else "degradation.exit"
        event = audit.AuditEvent(
            actor=ACTOR,
            action=action,
            subject=f"Policy/{policy}",
            at=datetime.fromtimestamp(self._clock.wall(), UTC),
            reason=decision.reason,
            after=after,
        )
        with write_session(self.registry.engine) as session:
            audit.append(session, event)
        log.warning("degradation: %s", decision.reason)

    def _freeze(self, frozen: bool) -> None:
        for rollout in self.resources.list(ROLLOUT):
            command = _to_give(rollout, frozen)
            if command is None:
                continue
            with contextlib.suppress(Conflict, NotFound):
                # Conflict: the rollout moved on (promoted, rolled back) since it was read.
                record_command(
                    self.registry.engine,
                    rollout.name,
                    command,
                    actor=ACTOR,
                    now=self._clock.wall(),
                )


def _to_give(rollout: Resource, frozen: bool) -> Command | None:
    """The command this rollout needs from the degrader, if any."""
    commands = rollout.spec.get("commands", [])
    status = rollout.status or {}
    if status.get("commands_seen", 0) != len(commands):
        return None  # a command is waiting for the rollout controller: let it land first
    phase = Phase(status.get("state", {}).get("phase", Phase.PENDING.value))
    last = commands[-1] if commands else {}
    ours = last.get("command") == Command.PAUSE.value and last.get("by") == ACTOR
    if frozen and phase in _MOVING:
        return Command.PAUSE
    if not frozen and ours and phase is Phase.PAUSED:
        return Command.RESUME
    return None

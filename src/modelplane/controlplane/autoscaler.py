"""The autoscaler: endpoints' replica counts follow observed concurrency (Knative's KPA).

Opt-in per endpoint, with labels, so nothing changes for endpoints that do not ask:

- ``modelplane.io/autoscale: "true"`` turns it on;
- ``modelplane.io/min-replicas`` / ``modelplane.io/max-replicas`` bound it (default 1 and
  :data:`DEFAULT_MAX_REPLICAS`); the tier's rule in the applied policy raises the floor
  (``min_warm_replicas``; no scale to zero where the tier forbids it);
- ``modelplane.io/target-concurrency`` overrides the policy's ``autoscaling`` target.

Each pass, per autoscaled endpoint:

1. read the load the gateway sees (through :class:`ConcurrencyEvidence`, which the CLI
   adapts): requests in flight and ready replicas;
2. call ``core.autoscale.autoscale`` with the state of the previous pass;
3. when the desired count differs from the spec's ``replicas`` and the gateway already runs
   what the spec says (one change at a time: a replica change in flight is not judged
   again), write ``replicas`` into the endpoint spec with one audit event (actor
   ``autoscaler``, the KPA readings in the reason), guarded by the generation it read.
   The endpoint controller carries the change to the gateway.

The KPA window (the last minute of samples) lives in this object, not in the store: it is
observation, not desired state, and a restarted autoscaler refills it within a window.
Endpoints need at least one replica (the gateway has no activator yet), so the effective
floor is 1 even where a tier would allow zero.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from modelplane.controlplane.loop import every
from modelplane.controlplane.why import applied_policy
from modelplane.core.autoscale import (
    ScaleConfig,
    ScaleDecision,
    ScaleSnapshot,
    ScaleState,
    autoscale,
)
from modelplane.errors import Conflict, InvalidSpec
from modelplane.registry.service import Registry
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.policy import Policy
from modelplane.store.resources import Resource, ResourceStore
from modelplane.types import Clock, SystemClock

__all__ = [
    "ACTOR",
    "AUTOSCALE_LABEL",
    "DEFAULT_MAX_REPLICAS",
    "MAX_REPLICAS_LABEL",
    "MIN_REPLICAS_LABEL",
    "TARGET_LABEL",
    "Autoscaler",
    "ConcurrencyEvidence",
    "Load",
    "scale_config",
]

log = logging.getLogger(__name__)

ACTOR = "autoscaler"
AUTOSCALE_LABEL = "modelplane.io/autoscale"
MIN_REPLICAS_LABEL = "modelplane.io/min-replicas"
MAX_REPLICAS_LABEL = "modelplane.io/max-replicas"
TARGET_LABEL = "modelplane.io/target-concurrency"
DEFAULT_MAX_REPLICAS = 10
_SPEC_MAX_REPLICAS = 1024  # Endpoint.replicas' own bound


@dataclass(frozen=True, slots=True)
class Load:
    """What the gateway sees of one endpoint now."""

    concurrency: float
    """Requests in flight: queued in the batchers plus sent to workers."""
    ready_replicas: int
    replicas: int
    """Replicas the gateway runs per route now (the spec's count once it caught up)."""


class ConcurrencyEvidence(Protocol):
    """What the autoscaler reads from the data plane (``system.gateway_views`` adapts the
    gateway)."""

    def load(self, endpoint: str) -> Load | None:
        """The endpoint's load, or None when it is not served."""
        ...


def _label_int(labels: Mapping[str, str], key: str, default: int) -> int:
    text = labels.get(key)
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= _SPEC_MAX_REPLICAS:
        raise InvalidSpec(f"label {key}: '{text}' is not a whole number 1..{_SPEC_MAX_REPLICAS}")
    return int(text)


def scale_config(endpoint: Endpoint, policy: Policy) -> ScaleConfig:
    """The KPA knobs for ``endpoint``: the policy's, its tier's floor, its labels."""
    labels = endpoint.labels
    knobs = policy.autoscaling
    target = labels.get(TARGET_LABEL)
    if target is not None:
        try:
            value = float(target)
        except ValueError:
            value = 0.0
        if not value > 0:
            raise InvalidSpec(f"label {TARGET_LABEL}: '{target}' is not a positive number")
        knobs = knobs.model_copy(update={"target_concurrency": value})
    low = _label_int(labels, MIN_REPLICAS_LABEL, 1)
    high = _label_int(labels, MAX_REPLICAS_LABEL, max(DEFAULT_MAX_REPLICAS, low))
    if high < low:
        raise InvalidSpec(f"label {MAX_REPLICAS_LABEL}: {high} is below the minimum {low}")
    return ScaleConfig.for_tier(
        policy, endpoint.tier, min_replicas=low, max_replicas=high, knobs=knobs
    )


class Autoscaler:
    """Scales autoscaled endpoints; see the module docstring."""

    def __init__(
        self, registry: Registry, evidence: ConcurrencyEvidence, *, clock: Clock | None = None
    ) -> None:
        self._clock = clock or SystemClock()
        self.resources = ResourceStore(registry.engine, clock=self._clock)
        self.evidence = evidence
        self._states: dict[str, ScaleState] = {}
        self._refused: dict[str, str] = {}

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged."""
        await every(stop, interval_s, self.reconcile, log=log, what="autoscaler pass")

    async def reconcile(self) -> None:
        """One pass over every endpoint; the event loop only reads the gateway."""
        found = await asyncio.to_thread(self._read)
        if found is None:
            return
        policy, endpoints = found
        for resource in endpoints:
            load = self.evidence.load(resource.name)
            if load is not None:
                await asyncio.to_thread(self.reconcile_one, resource, policy, load)

    def _read(self) -> tuple[Policy, list[Resource]] | None:
        endpoints = [
            r
            for r in self.resources.list("Endpoint")
            if r.spec.get("labels", {}).get(AUTOSCALE_LABEL) == "true"
        ]
        names = {r.name for r in endpoints}
        for gone in self._states.keys() - names:
            del self._states[gone]
        return (applied_policy(self.resources), endpoints) if endpoints else None

    def reconcile_one(self, resource: Resource, policy: Policy, load: Load) -> ScaleDecision | None:
        """Decide for one endpoint and write its ``replicas`` when they should change."""
        endpoint = Endpoint.model_validate(resource.spec)
        try:
            config = scale_config(endpoint, policy)
        except InvalidSpec as exc:
            if self._refused.get(endpoint.name) != exc.message:
                log.warning("not autoscaling %s: %s", endpoint.name, exc.message)
            self._refused[endpoint.name] = exc.message
            return None
        self._refused.pop(endpoint.name, None)
        now = self._clock.monotonic()
        snapshot = ScaleSnapshot(endpoint.name, load.ready_replicas, load.concurrency)
        state = self._states.get(endpoint.name, ScaleState())
        decision, self._states[endpoint.name] = autoscale(snapshot, config, now, state)
        desired = max(1, min(decision.desired, _SPEC_MAX_REPLICAS))
        if desired == endpoint.replicas or load.replicas != endpoint.replicas:
            return decision
        reason = (
            f"autoscale {endpoint.replicas} -> {desired}: concurrency {load.concurrency:g}"
            f" over {load.ready_replicas} ready, target {config.target_concurrency:g},"
            f" {'panic' if decision.panic else 'stable'} mode ({decision.reason})"
        )
        spec = {**resource.spec, "replicas": desired}
        try:
            self.resources.apply(
                "Endpoint",
                endpoint.name,
                spec,
                actor=ACTOR,
                reason=reason,
                expected_generation=resource.generation,
            )
        except Conflict:
            return decision  # changed by someone else meanwhile: judged again next pass
        log.info("%s: %s", endpoint.name, reason)
        return decision

"""The endpoint controller: make what is served match the endpoints in the store.

Level-triggered: each pass reads every ``Endpoint`` resource, resolves its routes to
verified packages in a local cache, hands the whole desired set to the serving target (the
gateway, behind :class:`ServingTarget`) when anything changed, and writes each endpoint's
status (observed generation, resolved versions, a ``Ready`` condition) only when it
differs. A restarted controller simply starts again from the store.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from modelplane.controlplane.featuresets import resolve_feature_set
from modelplane.controlplane.loop import every
from modelplane.errors import ModelplaneError
from modelplane.registry.service import Registry
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.manifest import Manifest
from modelplane.store.resources import Resource, ResourceStore
from modelplane.types import Clock, Digest, SystemClock

__all__ = [
    "EndpointController",
    "EndpointPlan",
    "ReplicaCounter",
    "ResolvedModel",
    "ServingTarget",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A route's model version, fetched and verified into a local folder."""

    label: str
    directory: Path
    manifest: Manifest
    digest: Digest


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """What one endpoint should serve: its spec, every route's resolved model, and the
    feature sets it binds (by ``name:version``)."""

    endpoint: Endpoint
    models: Mapping[str, ResolvedModel]
    generation: int
    featuresets: Mapping[str, FeatureSet] = field(default_factory=dict)


class ServingTarget(Protocol):
    """Where endpoints are served; the gateway implements this through an adapter."""

    async def serve(self, plans: Sequence[EndpointPlan]) -> None:
        """Serve exactly ``plans`` (start new, replace changed, stop removed)."""
        ...

    def ready(self, endpoint: str) -> bool: ...


@runtime_checkable
class ReplicaCounter(Protocol):
    """A serving target that can also count an endpoint's replicas (optional: a target
    without it gets no ``replicas`` in the status)."""

    def replica_counts(self, endpoint: str) -> tuple[int, int]:
        """``(ready, total)`` replicas over every route of ``endpoint``."""
        ...


class EndpointController:
    """Reconciles ``Endpoint`` resources onto a :class:`ServingTarget`."""

    def __init__(
        self,
        registry: Registry,
        target: ServingTarget,
        cache_dir: Path,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.registry = registry
        self.resources = ResourceStore(registry.engine)
        self.target = target
        self.cache_dir = cache_dir
        self._clock = clock or SystemClock()
        self._served: tuple[tuple[str, int], ...] | None = None
        self._errors: dict[str, str] = {}
        self._counter = target if isinstance(target, ReplicaCounter) else None

    async def reconcile(self) -> None:
        """One pass; safe to run at any time, any number of times."""
        desired = await asyncio.to_thread(self.resources.list, "Endpoint")
        plans, self._errors = await asyncio.to_thread(self._plans, desired)
        key = tuple(sorted((p.endpoint.name, p.generation) for p in plans))
        if key != self._served:
            await self.target.serve(plans)
            self._served = key
        await asyncio.to_thread(self._write_status, desired, plans)

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged, not fatal."""
        await every(stop, interval_s, self.reconcile, log=log, what="endpoint reconcile")

    def _plans(self, desired: Sequence[Resource]) -> tuple[list[EndpointPlan], dict[str, str]]:
        plans: list[EndpointPlan] = []
        errors: dict[str, str] = {}
        for resource in desired:
            try:
                plans.append(self._plan(resource))
            except ModelplaneError as exc:
                errors[resource.name] = exc.message
        return plans, errors

    def _plan(self, resource: Resource) -> EndpointPlan:
        endpoint = Endpoint.model_validate(resource.spec)
        pinned = (resource.status or {}).get("resolved", {})
        models: dict[str, ResolvedModel] = {}
        refs = [r.model for r in endpoint.routes]
        refs += [s.model for s in endpoint.shadows if s.model not in refs]
        for ref in refs:
            target = pinned.get(ref, {}).get("ref", ref)
            models[ref] = self._fetch(target)
        featuresets = {
            b.feature_set: resolve_feature_set(self.resources, b.feature_set)
            for b in endpoint.features
        }
        return EndpointPlan(endpoint, models, resource.generation, featuresets)

    def _fetch(self, ref: str) -> ResolvedModel:
        version = self.registry.get(ref)
        folder = self.cache_dir / version.digest.removeprefix("sha256:")
        if not folder.is_dir():
            staging = folder.with_name(folder.name + ".partial")
            if staging.exists():
                shutil.rmtree(staging)
            self.registry.fetch(version.ref, staging)
            staging.rename(folder)
        return ResolvedModel(version.ref, folder, version.manifest, version.digest)

    def _write_status(self, desired: Sequence[Resource], plans: Sequence[EndpointPlan]) -> None:
        planned = {p.endpoint.name: p for p in plans}
        for resource in desired:
            status = self._status(resource, planned.get(resource.name))
            self.resources.set_status("Endpoint", resource.name, status)

    def _status(self, resource: Resource, plan: EndpointPlan | None) -> dict[str, Any]:
        previous = resource.status or {}
        ready = plan is not None and self.target.ready(resource.name)
        if plan is None:
            reason, message = "ResolveFailed", self._errors.get(resource.name, "")
        elif ready:
            reason, message = "Serving", "every route has a ready replica"
        else:
            reason, message = "Starting", "waiting for replicas to pass warmup"
        condition: dict[str, Any] = {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": reason,
            "message": message,
            "observed_generation": resource.generation,
        }
        old: dict[str, Any] = next(
            (c for c in previous.get("conditions", []) if c.get("type") == "Ready"), {}
        )
        unchanged = {k: v for k, v in old.items() if k != "last_transition_time"} == condition
        condition["last_transition_time"] = (
            old.get("last_transition_time") if unchanged else self._now()
        )
        served = {} if plan is None else {ref: m.label for ref, m in plan.models.items()}
        status = {
            **previous,
            "observed_generation": resource.generation,
            "serving": served,
            "conditions": [condition],
        }
        if self._counter is not None:
            ready_count, total = self._counter.replica_counts(resource.name) if plan else (0, 0)
            status["replicas"] = {"ready": ready_count, "total": total}
        return status

    def _now(self) -> str:
        return datetime.fromtimestamp(self._clock.wall(), UTC).isoformat()

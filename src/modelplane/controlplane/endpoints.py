"""The endpoint controller: make what is served match the endpoints in the store.

Each endpoint is reconciled on its own, as Kubernetes reconciles each object: a pass reads
every ``Endpoint`` resource and, for each one whose generation the serving target does not
serve yet, starts one task that resolves its routes to verified packages in a local cache
and puts it on the target (the gateway, behind :class:`ServingTarget`). The pass waits for
those tasks only up to its interval: an endpoint that warms up for a minute, or fails,
holds up no other endpoint's change, weight move or rollback. A failed endpoint keeps
serving what it served, shows the failure as a typed condition, and is retried with capped
exponential backoff (a new generation is tried at once).

Status is written by this controller only, and only what the target really serves: the
generation it serves (``observed_generation``), its routes, weights and versions, and two
conditions (``Ready``: does it answer; ``Synced``: does it serve the latest generation, and
if not, why). A restarted controller starts again from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from modelplane.controlplane.featuresets import resolve_feature_set
from modelplane.controlplane.loop import every
from modelplane.core.plan import EndpointPlan, ModelSource
from modelplane.errors import IntegrityError, ModelplaneError
from modelplane.registry.digest import verify_package
from modelplane.registry.service import Registry
from modelplane.security.signing import require_trusted_refs
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.manifest import Manifest
from modelplane.store.resources import Resource, ResourceStore
from modelplane.types import Clock, Digest, SystemClock

__all__ = [
    "GATEWAY_KIND",
    "GATEWAY_NAME",
    "HEARTBEAT_EVERY_S",
    "ConditionType",
    "EndpointController",
    "EndpointPlan",
    "PendingReplicas",
    "Reason",
    "ReplicaCounter",
    "ResolvedModel",
    "ServedEndpoint",
    "ServingTarget",
    "write_heartbeat",
]

log = logging.getLogger(__name__)

GATEWAY_KIND, GATEWAY_NAME = "Gateway", "local"
"""The resource whose status carries the serving gateway's heartbeat."""
HEARTBEAT_EVERY_S = 5.0
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 60.0


class ConditionType(StrEnum):
    READY = "Ready"
    """The endpoint answers: it is served and every route has a ready replica."""
    SYNCED = "Synced"
    """The target serves the endpoint's latest generation."""


class Reason(StrEnum):
    SERVING = "Serving"
    """Ready: every route has a ready replica."""
    NO_READY_REPLICA = "NoReadyReplica"
    """Not ready: served, but a route has no ready replica (workers died or restart)."""
    STARTING = "Starting"
    """Not ready or not synced: its model versions are starting and warming up."""
    RESOLVE_FAILED = "ResolveFailed"
    """A route's model version or a bound feature set could not be found or fetched."""
    START_FAILED = "StartFailed"
    """The target could not start it (a model that fails to load, a bad fallback, ...)."""
    CURRENT = "Current"
    """Synced: the target serves the latest generation."""
    NOT_SERVED = "NotServed"
    """Not ready: no generation of it has been served yet."""


ResolvedModel = ModelSource
"""A route's model version, fetched and verified into a local folder (the plan's source)."""


@dataclass(frozen=True, slots=True)
class ServedEndpoint:
    """What the target serves for one endpoint now, as callers see it."""

    routes: tuple[tuple[str, str, float], ...]
    """``(model ref, version label, weight)`` per route."""
    shadows: tuple[tuple[str, str, float], ...] = ()
    """``(model ref, version label, percent)`` per shadow."""
    ready: bool = False
    """Every route has a ready replica."""


class ServingTarget(Protocol):
    """Where endpoints are served; the gateway implements this through an adapter."""

    def expect(self, endpoints: Collection[str]) -> None:
        """The endpoints that should be served (those not running yet answer 503)."""
        ...

    async def put(self, plan: EndpointPlan) -> None:
        """Serve ``plan``'s endpoint, touching no other; raise if it cannot start."""
        ...

    async def remove(self, endpoint: str) -> None: ...

    def served(self, endpoint: str) -> ServedEndpoint | None:
        """What is served for ``endpoint`` now; ``None`` when nothing is."""
        ...


@runtime_checkable
class ReplicaCounter(Protocol):
    """A serving target that can also count an endpoint's replicas (optional: a target
    without it gets no ``replicas`` in the status)."""

    def replica_counts(self, endpoint: str) -> tuple[int, int]:
        """``(ready, total)`` replicas over every route of ``endpoint``."""
        ...


@runtime_checkable
class PendingReplicas(Protocol):
    """A serving target that knows why replicas wait (a backend's placement): shown in the
    status as ``replicas.pending``, one line each."""

    def pending_replicas(self, endpoint: str) -> list[str]:
        """``version#index: reason`` for each replica of ``endpoint`` left pending."""
        ...


@dataclass(slots=True)
class _Track:
    """The controller's memory of one endpoint (observation, rebuilt after a restart)."""

    served_generation: int | None = None
    task: asyncio.Task[None] | None = None
    failed_generation: int | None = None
    reason: Reason | None = None
    message: str = ""
    failures: int = 0
    retry_at: float = 0.0
    verify_cache: bool = False
    """Check cached packages byte by byte before the next try (a start failed)."""


class EndpointController:
    """Reconciles ``Endpoint`` resources onto a :class:`ServingTarget`, one by one."""

    def __init__(
        self,
        registry: Registry,
        target: ServingTarget,
        cache_dir: Path,
        *,
        clock: Clock | None = None,
        pass_budget_s: float = 1.0,
        sandbox_missing: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.resources = ResourceStore(registry.engine)
        self.target = target
        self.cache_dir = cache_dir
        self.sandbox_missing = dict(sandbox_missing or {})
        """What the target's model workers cannot give up, and why (``security.sandbox``):
        said with the heartbeat, so ``status`` shows it where people look."""
        self.pass_budget_s = pass_budget_s
        """How long a pass waits for the endpoints it started before writing status."""
        self._clock = clock or SystemClock()
        self._tracks: dict[str, _Track] = {}
        self._removing: dict[str, asyncio.Task[None]] = {}
        self._fetch_locks: dict[str, threading.Lock] = {}
        self._next_heartbeat = float("-inf")
        self._counter = target if isinstance(target, ReplicaCounter) else None

    async def prime(self) -> None:
        """Tell the target what the store says to serve, before the first pass: requests
        for those endpoints then answer 503 (retry) rather than 404 while they start."""
        desired = await asyncio.to_thread(self.resources.list, "Endpoint")
        self.target.expect([r.name for r in desired])

    def _heartbeat(self) -> None:
        now = self._clock.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_EVERY_S
            write_heartbeat(
                self.resources, self._clock.wall(), sandbox_missing=self.sandbox_missing
            )

    async def reconcile(self) -> None:
        """One pass; safe to run at any time, any number of times."""
        desired = {r.name: r for r in await asyncio.to_thread(self.resources.list, "Endpoint")}
        self.target.expect(list(desired))
        now = self._clock.monotonic()
        started = [
            task
            for resource in desired.values()
            if (task := self._converge_if_due(resource, now)) is not None
        ]
        started += self._remove_unwanted(desired)
        if started:
            await asyncio.wait(started, timeout=self.pass_budget_s)
        await asyncio.to_thread(self._write_status, list(desired.values()))
        await asyncio.to_thread(self._heartbeat)

    async def run(self, stop: asyncio.Event, interval_s: float = 0.25) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged, not fatal.

        A quarter second: a rollback typed in a hurry reaches the gateway within it, and an
        idle pass costs one query and an in-memory comparison per endpoint."""
        try:
            await every(stop, interval_s, self.reconcile, log=log, what="endpoint reconcile")
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        """Cancel the endpoint starts still running (the controller is stopping)."""
        tasks = [t.task for t in self._tracks.values() if t.task is not None]
        tasks += list(self._removing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ one endpoint

    def _converge_if_due(self, resource: Resource, now: float) -> asyncio.Task[None] | None:
        track = self._tracks.setdefault(resource.name, _Track())
        if track.task is not None and not track.task.done():
            return None  # still starting: its result is taken by a later pass
        if track.served_generation == resource.generation:
            return None
        if track.failed_generation == resource.generation and now < track.retry_at:
            return None
        track.task = asyncio.create_task(
            self._converge(resource, track), name=f"reconcile-{resource.name}"
        )
        return track.task

    async def _converge(self, resource: Resource, track: _Track) -> None:
        try:
            plan = await asyncio.to_thread(self._plan, resource, track.verify_cache)
        except Exception as exc:  # a bad ref, a store error: this endpoint only
            self._failed(resource, track, Reason.RESOLVE_FAILED, exc)
            return
        try:
            await self.target.put(plan)
        except Exception as exc:  # the target keeps serving what it served
            self._failed(resource, track, Reason.START_FAILED, exc)
            return
        track.served_generation = resource.generation
        track.failed_generation, track.reason, track.message = None, None, ""
        track.failures, track.verify_cache = 0, False

    def _failed(self, resource: Resource, track: _Track, reason: Reason, exc: Exception) -> None:
        message = exc.message if isinstance(exc, ModelplaneError) else f"{exc!r}"
        delay = min(_BACKOFF_FIRST_S * 2**track.failures, _BACKOFF_MAX_S)
        track.failed_generation, track.reason, track.message = resource.generation, reason, message
        track.failures += 1
        track.retry_at = self._clock.monotonic() + delay
        track.verify_cache = True
        log.warning(
            "endpoint %s generation %d: %s: %s (retry in %.0f s)",
            resource.name, resource.generation, reason.value, message, delay,
        )  # fmt: skip

    def _remove_unwanted(self, desired: Mapping[str, Resource]) -> list[asyncio.Task[None]]:
        started = []
        for name in [n for n in self._tracks if n not in desired]:
            track = self._tracks[name]
            if track.task is not None and not track.task.done():
                continue  # removed once its start has ended
            del self._tracks[name]
            task = asyncio.create_task(self.target.remove(name), name=f"remove-{name}")
            self._removing[name] = task
            task.add_done_callback(self._forget_removal)
            started.append(task)
        return started

    def _forget_removal(self, task: asyncio.Task[None]) -> None:
        for name, running in list(self._removing.items()):
            if running is task:
                del self._removing[name]
        if not task.cancelled() and task.exception() is not None:
            log.warning("removing an endpoint failed: %r", task.exception())

    def _plan(self, resource: Resource, verify_cache: bool) -> EndpointPlan:
        endpoint = Endpoint.model_validate(resource.spec)
        legacy = (resource.status or {}).get("resolved", {})  # pins before they moved to spec
        models: dict[str, ModelSource] = {}
        refs = [r.model for r in endpoint.routes]
        refs += [s.model for s in endpoint.shadows if s.model not in refs]
        pinned = {
            ref: endpoint.pins.get(ref) or legacy.get(ref, {}).get("ref", ref) for ref in refs
        }
        # Before any package is fetched or loaded: trusted signatures, under the policy now
        # (a rollout changes routes without apply).
        require_trusted_refs(self.registry, self.resources, endpoint.tier, pinned)
        for ref, target in pinned.items():
            models[ref] = self._fetch(target, verify_cache)
        featuresets = {
            b.feature_set: resolve_feature_set(self.resources, b.feature_set)
            for b in endpoint.features
        }
        return EndpointPlan(endpoint, models, featuresets, generation=resource.generation)

    def _fetch(self, ref: str, verify_cache: bool) -> ModelSource:
        version = self.registry.get(ref)
        # Endpoints are planned in parallel threads; two may need the same package.
        with self._fetch_locks.setdefault(version.digest, threading.Lock()):
            return self._fetch_locked(version.ref, version.manifest, version.digest, verify_cache)

    def _fetch_locked(
        self, ref: str, manifest: Manifest, digest: Digest, verify_cache: bool
    ) -> ModelSource:
        folder = self.cache_dir / digest.removeprefix("sha256:")
        if folder.is_dir() and verify_cache:
            try:
                verify_package(folder, digest)
            except (IntegrityError, OSError) as exc:
                log.warning("cached package of %s is damaged, fetching it again: %s", ref, exc)
                shutil.rmtree(folder)
        if not folder.is_dir():
            staging = folder.with_name(folder.name + ".partial")
            if staging.exists():
                shutil.rmtree(staging)
            self.registry.fetch(ref, staging)
            staging.rename(folder)
        return ModelSource(ref, folder, manifest, digest)

    # ------------------------------------------------------------------ status

    def _write_status(self, desired: Sequence[Resource]) -> None:
        for resource in desired:
            status = self._status(resource)
            if status != resource.status:
                self.resources.set_status("Endpoint", resource.name, status)

    def _status(self, resource: Resource) -> dict[str, Any]:
        track = self._tracks.get(resource.name, _Track())
        served = self.target.served(resource.name)
        previous = resource.status or {}
        conditions = [
            self._condition(previous, ConditionType.READY, *_ready(served, track)),
            self._condition(previous, ConditionType.SYNCED, *_synced(resource, track)),
        ]
        status: dict[str, Any] = {
            "observed_generation": track.served_generation if served is not None else None,
            "serving": {} if served is None else _serving(served),
            "routes": [] if served is None else [
                {"model": ref, "version": label, "weight": weight}
                for ref, label, weight in served.routes
            ],
            "shadows": [] if served is None else [
                {"model": ref, "version": label, "percent": percent}
                for ref, label, percent in served.shadows
            ],
            "conditions": conditions,
            # whether callers ever got answers: until then a contract may change freely
            "served_ever": bool(previous.get("served_ever")) or served is not None,
        }  # fmt: skip
        if self._counter is not None:
            ready_count, total = self._counter.replica_counts(resource.name)
            status["replicas"] = {"ready": ready_count, "total": total}
            if isinstance(self._counter, PendingReplicas):
                pending = self._counter.pending_replicas(resource.name)
                if pending:
                    status["replicas"]["pending"] = pending
        return status

    def _condition(
        self,
        previous: Mapping[str, Any],
        kind: ConditionType,
        ok: bool,
        reason: Reason,
        message: str,
        generation: int | None,
    ) -> dict[str, Any]:
        condition: dict[str, Any] = {
            "type": kind.value,
            "status": "True" if ok else "False",
            "reason": reason.value,
            "message": message,
            "observed_generation": generation,
        }
        old: dict[str, Any] = next(
            (c for c in previous.get("conditions", []) if c.get("type") == kind.value), {}
        )
        same = old.get("status") == condition["status"] and old.get("reason") == reason.value
        condition["last_transition_time"] = (
            old.get("last_transition_time") if same and old else self._now()
        )
        return condition

    def _now(self) -> str:
        return datetime.fromtimestamp(self._clock.wall(), UTC).isoformat()


def write_heartbeat(
    resources: ResourceStore, wall: float, *, sandbox_missing: Mapping[str, str] | None = None
) -> None:
    """Say that a gateway reports for the endpoints' statuses (at ``wall``, epoch seconds):
    once it stops, readers mark replica counts and health stale instead of trusting them.
    ``sandbox_missing``: what its model workers cannot give up, by feature, and why."""
    status: dict[str, Any] = {"heartbeat_at": wall, "every_s": HEARTBEAT_EVERY_S}
    if sandbox_missing:
        status["sandbox_missing"] = dict(sandbox_missing)
    if not resources.set_status(GATEWAY_KIND, GATEWAY_NAME, status):
        resources.apply(
            GATEWAY_KIND,
            GATEWAY_NAME,
            {"kind": GATEWAY_KIND, "name": GATEWAY_NAME},
            actor="endpoint-controller",
            reason="a gateway reports endpoint status",
        )
        resources.set_status(GATEWAY_KIND, GATEWAY_NAME, status)


def _serving(served: ServedEndpoint) -> dict[str, str]:
    serving = {ref: label for ref, label, _ in served.routes}
    serving |= {ref: label for ref, label, _ in served.shadows}
    return serving


def _ready(served: ServedEndpoint | None, track: _Track) -> tuple[bool, Reason, str, int | None]:
    generation = track.served_generation
    if served is None:
        if track.reason is not None:
            return False, track.reason, track.message, generation
        return False, Reason.NOT_SERVED, "its model versions are starting", generation
    if served.ready:
        return True, Reason.SERVING, "every route has a ready replica", generation
    return False, Reason.NO_READY_REPLICA, "a route has no ready replica", generation


def _synced(resource: Resource, track: _Track) -> tuple[bool, Reason, str, int | None]:
    generation = resource.generation
    if track.served_generation == generation:
        return True, Reason.CURRENT, f"generation {generation} is served", generation
    if track.failed_generation == generation and track.reason is not None:
        served = track.served_generation
        keeps = f"; generation {served} is still served" if served is not None else ""
        tries = f" (tried {track.failures} times, retried with backoff)"
        return False, track.reason, f"{track.message}{keeps}{tries}", generation
    return False, Reason.STARTING, f"generation {generation} is starting", generation

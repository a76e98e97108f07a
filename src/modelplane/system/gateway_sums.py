"""The evidence of several gateways, summed: what the rollout controller's gates, the SLO
recorder, the autoscaler and the degrader read when ``modelplane up --gateways N`` runs
more than one gateway.

Each gateway counts for itself, from zero, over its own life. :class:`GatewaySums` takes
every gateway's snapshot as it comes (the primary's when asked, each child's about twice
a second, see :mod:`.gateways`) and keeps, per gateway and per route, the last counters it
saw. A gateway whose counters went down (it restarted, or dropped the route and took it
back) has its last counters banked first, so a sum never goes down: the rollout
controller's window (cumulative counters minus the step's baseline) then holds exactly
what was counted since the step began, on every gateway. A gateway that died keeps its
counts in the sums; it stops counting toward concurrency and readiness once its last
snapshot is older than ``stale_after_s``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from modelplane.core.drift import Histogram
from modelplane.core.gates import ArmStats, ShadowStats
from modelplane.core.serving import EndpointView, GatewaySnapshot, VersionView

if TYPE_CHECKING:
    from modelplane.controlplane.autoscaler import Load
    from modelplane.controlplane.slo import EndpointCounters

__all__ = [
    "PRIMARY",
    "REPLICA_STRIDE",
    "GatewayReading",
    "GatewaySnapshots",
    "GatewaySums",
    "SummedConcurrency",
    "SummedEvidence",
    "SummedSlo",
    "UsageView",
    "add_arms",
    "add_histograms",
    "add_shadows",
]

PRIMARY = 1
"""The gateway of the ``up`` process itself; children are numbered from 2."""

REPLICA_STRIDE = 1000
"""In usage records, gateway ``g``'s replicas are numbered from ``(g - 1) * REPLICA_STRIDE``:
every gateway runs its own replica 0, 1, …, and each must stay a record of its own."""

K = TypeVar("K")
T = TypeVar("T")


class GatewaySnapshots(Protocol):
    """A gateway as the sums read it (``Gateway.snapshot``)."""

    def snapshot(self, endpoint: str | None = None) -> GatewaySnapshot: ...


@dataclass(frozen=True, slots=True)
class GatewayReading:
    """One gateway's snapshot and when it was taken."""

    gateway: int
    """Its number: :data:`PRIMARY`, or 2… for the child processes."""
    incarnation: int
    """Its process id: a restarted gateway is a new incarnation, counting from zero."""
    snapshot: GatewaySnapshot
    at: float
    """``time.monotonic()`` when it arrived."""


def add_histograms(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    """Counts added bucket by bucket. Gateways bin alike (fixed bounds); were two bins
    ever to differ, the one with more samples is kept rather than a wrong sum."""
    if a is None or b is None:
        return a if b is None else b
    if a.bounds != b.bounds:
        return a if a.total >= b.total else b
    return Histogram(a.bounds, tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)))


def add_arms(a: ArmStats, b: ArmStats) -> ArmStats:
    """Two gateways' (or two incarnations') evidence for one route, as one."""
    numeric = dict(a.numeric)
    for name, hist in b.numeric.items():
        numeric[name] = add_histograms(numeric.get(name), hist) or hist
    labels: dict[str, dict[str, int]] = {name: dict(counts) for name, counts in a.labels.items()}
    for name, counts in b.labels.items():
        merged = labels.setdefault(name, {})
        for label, n in counts.items():
            merged[label] = merged.get(label, 0) + n
    return ArmStats(
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        latency_ms=add_histograms(a.latency_ms, b.latency_ms),
        numeric=numeric,
        labels=labels,
    )


def add_shadows(a: ShadowStats, b: ShadowStats) -> ShadowStats:
    return ShadowStats(
        a.compared + b.compared,
        a.disagreed + b.disagreed,
        a.relative_error_sum + b.relative_error_sum,
    )


def _arm_lower(now: ArmStats, before: ArmStats) -> bool:
    return now.requests < before.requests or now.errors < before.errors


def _shadow_lower(now: ShadowStats, before: ShadowStats) -> bool:
    return now.compared < before.compared or now.disagreed < before.disagreed


class _Ledger(Generic[K, T]):
    """Cumulative counters per key over gateways that restart: never goes down."""

    def __init__(self, add: Callable[[T, T], T], lower: Callable[[T, T], bool], zero: T) -> None:
        self._add, self._lower, self._zero = add, lower, zero
        self._banked: dict[K, T] = {}
        self._last: dict[K, dict[int, T]] = {}
        self._incarnation: dict[int, int] = {}

    def observe(self, gateway: int, incarnation: int, values: Mapping[K, T]) -> None:
        if self._incarnation.get(gateway, incarnation) != incarnation:
            for key, by_gateway in self._last.items():
                gone = by_gateway.pop(gateway, None)
                if gone is not None:
                    self._bank(key, gone)
        self._incarnation[gateway] = incarnation
        for key, now in values.items():
            by_gateway = self._last.setdefault(key, {})
            before = by_gateway.get(gateway)
            if before is not None and self._lower(now, before):
                self._bank(key, before)
            by_gateway[gateway] = now

    def _bank(self, key: K, counted: T) -> None:
        self._banked[key] = self._add(self._banked.get(key, self._zero), counted)

    def total(self, key: K) -> T:
        total = self._banked.get(key, self._zero)
        for counted in self._last.get(key, {}).values():
            total = self._add(total, counted)
        return total


def _arms(view: EndpointView) -> dict[tuple[str, str], ArmStats]:
    return {(view.name, route.ref): route.version.stats for route in view.routes}


def _shadows(view: EndpointView) -> dict[tuple[str, str], ShadowStats]:
    return {(view.name, shadow.ref): shadow.comparison for shadow in view.shadows}


class GatewaySums:
    """Every gateway's latest snapshot and the route evidence summed over all of them.

    Thread-safe: children's snapshots arrive on reader threads, controllers read on the
    event loop. The primary gateway is read when asked (its snapshot is never stale).
    """

    def __init__(
        self,
        primary: GatewaySnapshots,
        *,
        stale_after_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        retired_kept: int = 8,
    ) -> None:
        self.primary = primary
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._arms: _Ledger[tuple[str, str], ArmStats] = _Ledger(add_arms, _arm_lower, ArmStats())
        self._shadows: _Ledger[tuple[str, str], ShadowStats] = _Ledger(
            add_shadows, _shadow_lower, ShadowStats()
        )
        self._latest: dict[int, GatewayReading] = {}
        self._retired: dict[int, deque[GatewayReading]] = {}
        self._retired_kept = retired_kept

    def observe(self, reading: GatewayReading) -> None:
        """Take a child gateway's snapshot (or any gateway's, in tests)."""
        with self._lock:
            self._observe(reading)

    def _observe(self, reading: GatewayReading) -> None:
        before = self._latest.get(reading.gateway)
        if before is not None and before.incarnation != reading.incarnation:
            # its SLO counters stay a key of their own: the recorder has seen them grow
            kept = self._retired.setdefault(reading.gateway, deque(maxlen=self._retired_kept))
            kept.append(before)
        self._latest[reading.gateway] = reading
        arms: dict[tuple[str, str], ArmStats] = {}
        shadows: dict[tuple[str, str], ShadowStats] = {}
        for view in reading.snapshot.endpoints.values():
            arms |= _arms(view)
            shadows |= _shadows(view)
        self._arms.observe(reading.gateway, reading.incarnation, arms)
        self._shadows.observe(reading.gateway, reading.incarnation, shadows)

    def _primary(self, endpoint: str | None) -> GatewayReading:
        snapshot = self.primary.snapshot(endpoint)
        return GatewayReading(PRIMARY, 0, snapshot, self._clock())

    def live(self, endpoint: str | None = None) -> list[GatewayReading]:
        """The primary's snapshot now and each child's latest one that is not stale."""
        reading = self._primary(endpoint)
        with self._lock:
            self._observe(reading)
            now = self._clock()
            children = [
                r
                for g, r in sorted(self._latest.items())
                if g != PRIMARY and now - r.at <= self.stale_after_s
            ]
        return [reading, *children]

    def views(self, endpoint: str) -> list[EndpointView]:
        """The endpoint as each live gateway serves it (gateways that do not, left out)."""
        return [v for r in self.live(endpoint) if (v := r.snapshot.endpoint(endpoint))]

    def route_stats(self, endpoint: str, ref: str) -> ArmStats | None:
        """The route's evidence summed over every gateway and incarnation that counted it;
        ``None`` when no live gateway serves the route."""
        if not any(v.route(ref) for v in self.views(endpoint)):
            return None
        with self._lock:
            return self._arms.total((endpoint, ref))

    def shadow_stats(self, endpoint: str, ref: str) -> ShadowStats | None:
        if not any(v.shadow(ref) for v in self.views(endpoint)):
            return None
        with self._lock:
            return self._shadows.total((endpoint, ref))

    def counter_sets(self) -> tuple[list[GatewayReading], list[tuple[str, GatewayReading]]]:
        """What the SLO recorder follows: the live readings (they say which endpoints are
        served), and every counter set by its key: each live gateway's, and the last ones
        of gateways that died or restarted, so what they answered before their last
        snapshot stays counted."""
        live = self.live()
        seen = {(r.gateway, r.incarnation) for r in live}
        every = list(live)
        with self._lock:
            every += [r for r in self._latest.values() if (r.gateway, r.incarnation) not in seen]
            for kept in self._retired.values():
                every += kept
        return live, [(f"requests@{r.gateway}.{r.incarnation}", r) for r in every]


class SummedEvidence:
    """The rollout controller's ``RolloutEvidence`` over every gateway: a route is ready
    when it is ready on each live gateway that serves the endpoint (a weight moved to it
    reaches all of them), and its evidence is the sum over all of them."""

    def __init__(self, sums: GatewaySums) -> None:
        self.sums = sums

    def route_ready(self, endpoint: str, model: str) -> bool:
        views = self.sums.views(endpoint)
        routes = [view.route(model) for view in views]
        return bool(routes) and all(r is not None and r.version.ready for r in routes)

    def route_stats(self, endpoint: str, model: str) -> ArmStats | None:
        return self.sums.route_stats(endpoint, model)

    def shadow_stats(self, endpoint: str, model: str) -> ShadowStats | None:
        return self.sums.shadow_stats(endpoint, model)


class SummedSlo:
    """The SLO recorder's ``SloEvidence``: one counter set per gateway incarnation, so the
    recorder's own restart rule (a set that went down began again) holds for each."""

    def __init__(self, sums: GatewaySums) -> None:
        self.sums = sums

    def served(self) -> dict[str, EndpointCounters]:
        from modelplane.controlplane.slo import EndpointCounters
        from modelplane.system.gateway_views import slo_counters

        live, counter_sets = self.sums.counter_sets()
        served = {name for reading in live for name in reading.snapshot.endpoints}
        merged: dict[str, EndpointCounters] = {}
        for key, reading in counter_sets:
            for name, counters in slo_counters(reading.snapshot).items():
                if name not in served:
                    continue
                found = merged.get(name)
                tallies = {**(found.tallies if found else {}), key: counters.tallies["requests"]}
                merged[name] = EndpointCounters(found.slo if found else counters.slo, tallies)
        return merged


class SummedConcurrency:
    """The autoscaler's and degrader's ``ConcurrencyEvidence`` over the live gateways.

    Every gateway runs the spec's replica count for itself, so the load the autoscaler
    weighs is one gateway's share: the requests in flight on all live gateways, divided by
    how many serve the endpoint, against one gateway's replicas. Ready replicas are the
    fewest any of them has; while the gateways disagree on the replica count (one has not
    caught up with a change), none is reported (-1), so the autoscaler waits.

    ``shared``: the gateways share one set of replicas (Ray), so every request in flight
    weighs against them, not one gateway's share.
    """

    def __init__(self, sums: GatewaySums, *, shared: bool = False) -> None:
        self.sums = sums
        self.shared = shared

    def load(self, endpoint: str) -> Load | None:
        from modelplane.controlplane.autoscaler import Load
        from modelplane.system.gateway_views import endpoint_load

        loads = [endpoint_load(view) for view in self.sums.views(endpoint)]
        if not loads:
            return None
        counts = {load.replicas for load in loads}
        return Load(
            sum(load.concurrency for load in loads) / (1 if self.shared else len(loads)),
            min(load.ready_replicas for load in loads),
            counts.pop() if len(counts) == 1 else -1,
        )


class UsageView:
    """Every live gateway's replicas as one snapshot, for the usage sampler: N gateways run N
    sets of workers on this machine, and each is reserved and used. Child gateways' replicas
    are renumbered (see :data:`REPLICA_STRIDE`)."""

    def __init__(self, sums: GatewaySums) -> None:
        self.sums = sums

    def snapshot(self, endpoint: str | None = None) -> GatewaySnapshot:
        merged: dict[str, EndpointView] = {}
        for reading in self.sums.live(endpoint):
            offset = (reading.gateway - PRIMARY) * REPLICA_STRIDE
            for name, served in reading.snapshot.endpoints.items():
                view = _renumbered(served, offset) if offset else served
                found = merged.get(name)
                merged[name] = view if found is None else replace(
                    found,
                    routes=found.routes + view.routes,
                    shadows=found.shadows + view.shadows,
                    versions=found.versions + view.versions,
                )  # fmt: skip
        return GatewaySnapshot(merged)


def _renumbered(view: EndpointView, offset: int) -> EndpointView:
    """``view`` with its replicas' numbers moved by ``offset``; routes and shadows keep
    pointing at the same (renumbered) version objects."""
    moved: dict[int, VersionView] = {}
    for version in view.versions:
        replicas = tuple(replace(r, index=r.index + offset) for r in version.replicas)
        moved[id(version)] = replace(version, replicas=replicas)

    def again(version: VersionView) -> VersionView:
        return moved.get(id(version)) or version

    return replace(
        view,
        routes=tuple(replace(r, version=again(r.version)) for r in view.routes),
        shadows=tuple(replace(s, version=again(s.version)) for s in view.shadows),
        versions=tuple(again(v) for v in view.versions),
    )

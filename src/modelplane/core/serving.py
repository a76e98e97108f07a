"""What a gateway serves, as the control side reads it: one typed, read-only snapshot.

Every controller that needs to know what the data plane is doing (the endpoint controller's
status, rollout gates, the autoscaler and degrader, the SLO recorder, the usage sampler)
reads a :class:`GatewaySnapshot` instead of reaching into the gateway's live objects. The
gateway builds one on demand (``Gateway.snapshot``), off its hot path: the values are copies,
safe to keep and compare, and a controller that holds one never holds a worker pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelplane.core.backend import ReplicaState
from modelplane.core.gates import ArmStats, ShadowStats
from modelplane.spec.contract import SLO
from modelplane.spec.manifest import Resources
from modelplane.types import Digest

__all__ = [
    "EndpointView",
    "GatewaySnapshot",
    "HostedUsage",
    "LatencyCounts",
    "ReplicaState",
    "ReplicaView",
    "RequestCounters",
    "RouteView",
    "ShadowView",
    "VersionView",
]


@dataclass(frozen=True, slots=True)
class HostedUsage:
    """A hosted replica's model process as read on its own node, by the process that owns
    it there (the Ray actor), and fetched by the pool that placed it."""

    pid: int
    cpu_seconds: float
    """User and system CPU time since the process started."""
    rss_mib: float
    read_at: float
    """When the reading arrived, on this process's monotonic clock."""
    age_s: float | None = None
    """How long the process had run when read; ``None``: not known."""


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica of a model version."""

    index: int
    state: ReplicaState
    node: str
    """The node it runs on (the local node's name for worker processes of this machine)."""
    pid: int | None
    outstanding: int
    """Batches sent to it and not answered yet."""
    reason: str = ""
    """Why it is not ready, where the pool knows (a replica placement left pending)."""
    hosted: bool = False
    """An execution backend hosts it (a Ray actor, maybe on another machine): not a process
    of this gateway, so this machine's readings say nothing about it."""
    accounted: bool = False
    """A hosted replica this gateway's pool placed and runs on ``node``: the usage sampler
    counts its reservation there. A gateway that shares replicas another one placed (``up
    --gateways N`` on Ray) leaves them to that one, which counts them once."""
    usage: HostedUsage | None = None
    """An accounted replica's latest reading (``None``: not read yet)."""


@dataclass(frozen=True, slots=True)
class VersionView:
    """One model version as one endpoint runs it: its replicas, queue and evidence."""

    label: str
    digest: Digest
    resources: Resources
    """What each replica asked for (the package manifest's request)."""
    desired_replicas: int
    replicas: tuple[ReplicaView, ...]
    ready: bool
    """It takes requests: at least one replica is ready."""
    queued_rows: int
    """Rows waiting in its batcher."""
    mean_batch_rows: float
    """Rows per batch sent so far (0 before the first batch)."""
    busy_seconds: float
    restarts: int
    stats: ArmStats
    """Its cumulative route evidence (requests, errors, latency, outputs)."""

    @property
    def ready_replicas(self) -> int:
        return sum(1 for replica in self.replicas if replica.state is ReplicaState.READY)

    @property
    def outstanding_batches(self) -> int:
        return sum(replica.outstanding for replica in self.replicas)


@dataclass(frozen=True, slots=True)
class RouteView:
    """A route of an endpoint: the version it reaches, its weight and its breaker."""

    ref: str
    """The model ref as the endpoint spec writes it."""
    weight: float
    breaker_open: bool
    version: VersionView


@dataclass(frozen=True, slots=True)
class ShadowView:
    """A sampled copy of the endpoint's traffic to a version, answers compared only."""

    ref: str
    percent: float
    version: VersionView
    comparison: ShadowStats
    dropped: int
    """Copies not sent because the shadow was at its in-flight bound."""


@dataclass(frozen=True, slots=True)
class LatencyCounts:
    """One latency histogram: a count per bucket, the last one past every bound (+Inf)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def within(self, limit_s: float) -> int:
        """Requests answered in at most ``limit_s`` (bucket edges at or under it)."""
        return sum(c for b, c in zip(self.bounds, self.counts, strict=False) if b <= limit_s)

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class RequestCounters:
    """What callers of one endpoint saw over the gateway's life (counters only grow)."""

    by_status: Mapping[int, int] = field(default_factory=dict)
    """HTTP status → answers."""
    fallbacks: int = 0
    """Answers a fallback served (counted under their status too)."""
    latency: tuple[LatencyCounts, ...] = ()
    """One histogram per (version, route) that answered."""


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One served endpoint."""

    name: str
    team: str
    tier: str
    slo: SLO
    routes: tuple[RouteView, ...]
    shadows: tuple[ShadowView, ...]
    versions: tuple[VersionView, ...]
    """Every version it reaches, by its routes or its shadows, each once."""
    counters: RequestCounters

    def route(self, ref: str) -> RouteView | None:
        return next((route for route in self.routes if route.ref == ref), None)

    def shadow(self, ref: str) -> ShadowView | None:
        return next((shadow for shadow in self.shadows if shadow.ref == ref), None)

    @property
    def ready(self) -> bool:
        """Every route that takes traffic (weight above 0) has a ready replica."""
        return all(route.version.ready for route in self.routes if route.weight > 0)


@dataclass(frozen=True, slots=True)
class GatewaySnapshot:
    """Every endpoint one gateway serves, at one moment."""

    endpoints: Mapping[str, EndpointView] = field(default_factory=dict)

    def endpoint(self, name: str) -> EndpointView | None:
        return self.endpoints.get(name)

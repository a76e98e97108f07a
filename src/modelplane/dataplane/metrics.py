"""Gateway metrics, exposed in the Prometheus text format at ``/metrics``.

The hot path only bumps plain Python ints and lists (a dict lookup and an add, a bisect for
histograms); prometheus-client metric families are built from them when ``/metrics`` is
scraped. That keeps a request's metrics well under a microsecond, where prometheus-client's
own counters take a lock and a label lookup per update. Gauges (queue depth, worker
restarts) are read from their sources at scrape time.

Each :class:`GatewayMetrics` has its own ``CollectorRegistry``, so several gateways in one
process (tests) never collide.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = [
    "AGE_BUCKETS_S",
    "BATCH_BUCKETS",
    "CONTENT_TYPE",
    "LATENCY_BUCKETS_S",
    "EndpointReading",
    "FeatureMetrics",
    "GatewayMetrics",
    "Histogram",
    "RouteReading",
    "ShadowReading",
    "VersionReading",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_PREFIX = "modelplane_gateway_"


@dataclass(slots=True)
class Histogram:
    """Cumulative-at-scrape histogram: per-bucket counts (last is +Inf) and a sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


@dataclass(frozen=True, slots=True)
class ShadowReading:
    """One shadow's counters as ``/metrics`` shows them."""

    endpoint: str
    shadow: str
    compared: int
    disagreed: int
    relative_error_sum: float
    failed: int
    dropped: int


@dataclass(frozen=True, slots=True)
class RouteReading:
    """One route: the share of traffic it gets (a rollout's progress) and its breaker."""

    route: str
    model_version: str
    traffic_share: float
    circuit_open: bool


@dataclass(frozen=True, slots=True)
class VersionReading:
    """One model version of an endpoint: replicas, time busy, and what a replica costs."""

    model_version: str
    replicas: int
    ready: int
    busy_s: float
    """Seconds its workers spent on batches, summed over replicas (a counter)."""
    replica_price_per_hour: float
    """One replica's reservation (CPU, memory, GPUs) at list prices."""


@dataclass(frozen=True, slots=True)
class EndpointReading:
    """What ``/metrics`` shows of one endpoint beyond its counters: routes, model
    versions and the SLO its contract states (for burn rates computed by Prometheus)."""

    endpoint: str
    team: str
    availability_objective: float
    latency_objective_s: float
    routes: tuple[RouteReading, ...]
    versions: tuple[VersionReading, ...]


@dataclass(frozen=True, slots=True)
class _Source:
    endpoint: str
    model_version: str
    queue_rows: Callable[[], int]
    restarts: Callable[[], int]


class GatewayMetrics:
    """The counters, histograms and gauges of one gateway."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests: dict[tuple[str, str, str, str], int] = {}
        """``(endpoint, model_version, route, status)`` → count."""
        self.errors: dict[tuple[str, str], int] = {}
        """``(endpoint, error code)`` → count."""
        self.fallbacks: dict[tuple[str, str], int] = {}
        """``(endpoint, reason)`` → count."""
        self.latency: dict[tuple[str, str, str], Histogram] = {}
        self.batch_rows: dict[str, Histogram] = {}
        self._sources: list[_Source] = []
        self.shadows: Callable[[], Iterable[ShadowReading]] = tuple
        """Every shadow's cumulative comparison counters, read at scrape time."""
        self.endpoints: Callable[[], Iterable[EndpointReading]] = tuple
        """Every endpoint's routes, versions and SLO, read at scrape time."""
        self.features = FeatureMetrics()
        self.registry.register(_Collector(self))

    def add_source(
        self,
        endpoint: str,
        model_version: str,
        queue_rows: Callable[[], int],
        restarts: Callable[[], int],
    ) -> object:
        """Read queue depth and worker restarts of one model version at scrape time; the
        token :meth:`remove_source` takes when the version stops."""
        source = _Source(endpoint, model_version, queue_rows, restarts)
        self._sources.append(source)
        return source

    def remove_source(self, token: object) -> None:
        """Stop reading a source (a stopped version's gauges would hold its runtime)."""
        self._sources = [source for source in self._sources if source is not token]

    def request(
        self, endpoint: str, model_version: str, route: str, status: int, latency_s: float
    ) -> None:
        key = (endpoint, model_version, route, str(status))
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        hist_key = (endpoint, model_version, route)
        hist = self.latency.get(hist_key)
        if hist is None:
            hist = self.latency[hist_key] = Histogram(LATENCY_BUCKETS_S)
        hist.observe(latency_s)

    def error(self, endpoint: str, code: str) -> None:
        key = (endpoint, code)
        self.errors[key] = self.errors.get(key, 0) + 1

    def fallback(self, endpoint: str, reason: str) -> None:
        key = (endpoint, reason)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    def batch(self, model_version: str, rows: int) -> None:
        hist = self.batch_rows.get(model_version)
        if hist is None:
            hist = self.batch_rows[model_version] = Histogram(BATCH_BUCKETS)
        hist.observe(rows)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def families(self) -> Iterator[Metric]:
        yield _counter(
            "requests", "Requests answered.", ("endpoint", "model_version", "route", "code"),
            self.requests,
        )  # fmt: skip
        yield _counter(
            "errors", "Requests failed, by error code.", ("endpoint", "code"), self.errors
        )
        yield _counter(
            "fallbacks", "Answers served by the fallback.", ("endpoint", "reason"), self.fallbacks
        )
        latency = HistogramMetricFamily(
            _PREFIX + "request_duration_seconds",
            "Time from request body received to response sent.",
            labels=("endpoint", "model_version", "route"),
        )
        for key, hist in list(self.latency.items()):
            latency.add_metric(list(key), hist.buckets(), hist.total)
        yield latency
        batches = HistogramMetricFamily(
            _PREFIX + "batch_rows", "Rows per batch sent to workers.", labels=("model_version",)
        )
        for version, hist in list(self.batch_rows.items()):
            batches.add_metric([version], hist.buckets(), hist.total)
        yield batches
        yield from self._gauges()
        yield from _endpoint_families(self.endpoints())
        yield from self._shadow_families()
        yield from self.features.families()

    def _shadow_families(self) -> Iterator[Metric]:
        labels = ("endpoint", "shadow")
        families = {
            "compared": CounterMetricFamily(
                _PREFIX + "shadow_compared", "Shadow answers compared with the primary's.",
                labels=labels,
            ),
            "disagreed": CounterMetricFamily(
                _PREFIX + "shadow_disagreed", "Shadow labels that differ from the primary's.",
                labels=labels,
            ),
            "relative_error": CounterMetricFamily(
                _PREFIX + "shadow_relative_error",
                "Sum of shadow answers' relative errors against the primary's (divide by "
                "compared for the mean).",
                labels=labels,
            ),
            "failed": CounterMetricFamily(
                _PREFIX + "shadow_failed", "Shadow calls that failed.", labels=labels
            ),
            "dropped": CounterMetricFamily(
                _PREFIX + "shadow_dropped",
                "Shadow copies not sent: the shadow was at its in-flight bound or shed them.",
                labels=labels,
            ),
        }  # fmt: skip
        for reading in self.shadows():
            names = [reading.endpoint, reading.shadow]
            families["compared"].add_metric(names, reading.compared)
            families["disagreed"].add_metric(names, reading.disagreed)
            families["relative_error"].add_metric(names, reading.relative_error_sum)
            families["failed"].add_metric(names, reading.failed)
            families["dropped"].add_metric(names, reading.dropped)
        yield from families.values()

    def _gauges(self) -> Iterator[Metric]:
        labels = ("endpoint", "model_version")
        depth = GaugeMetricFamily(
            _PREFIX + "queue_rows", "Rows waiting to be batched.", labels=labels
        )
        restarts = CounterMetricFamily(
            _PREFIX + "worker_restarts", "Worker processes restarted.", labels=labels
        )
        for source in self._sources:
            names = [source.endpoint, source.model_version]
            depth.add_metric(names, source.queue_rows())
            restarts.add_metric(names, source.restarts())
        yield depth
        yield restarts


def _endpoint_families(readings: Iterable[EndpointReading]) -> Iterator[Metric]:
    def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(_PREFIX + name, doc, labels=labels)

    share = gauge("route_traffic_share", "Share of the endpoint's traffic a route gets (0-1).",
                  "endpoint", "route", "model_version")  # fmt: skip
    circuit = gauge("circuit_open", "1 while a route's circuit breaker is open.",
                    "endpoint", "route")  # fmt: skip
    replicas = gauge("replicas", "Worker processes asked for.", "endpoint", "model_version")
    ready = gauge("replicas_ready", "Worker processes ready.", "endpoint", "model_version")
    busy = CounterMetricFamily(
        _PREFIX + "busy_seconds", "Seconds workers spent on batches, summed over replicas.",
        labels=("endpoint", "model_version"),
    )  # fmt: skip
    price = gauge(
        "replica_price_per_hour",
        "One replica's reservation at list prices (USD per hour); idle cost per hour is "
        "(replicas - rate(busy_seconds_total)) * this.",
        "endpoint", "team", "model_version",
    )  # fmt: skip
    availability = gauge("slo_availability_objective", "The contract's availability target.",
                         "endpoint", "team")  # fmt: skip
    latency = gauge("slo_latency_objective_seconds", "The contract's latency objective.",
                    "endpoint", "team")  # fmt: skip
    for reading in readings:
        name, team = reading.endpoint, reading.team
        availability.add_metric([name, team], reading.availability_objective)
        latency.add_metric([name, team], reading.latency_objective_s)
        for route in reading.routes:
            share.add_metric([name, route.route, route.model_version], route.traffic_share)
            circuit.add_metric([name, route.route], 1.0 if route.circuit_open else 0.0)
        for version in reading.versions:
            labels = [name, version.model_version]
            replicas.add_metric(labels, version.replicas)
            ready.add_metric(labels, version.ready)
            busy.add_metric(labels, version.busy_s)
            price.add_metric([name, team, version.model_version], version.replica_price_per_hour)
    yield from (share, circuit, replicas, ready, busy, price, availability, latency)


# ---------------------------------------------------------------- request-time feature join

AGE_BUCKETS_S: tuple[float, ...] = (
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0,
)  # fmt: skip
"""Ages of served feature values: seconds to a week."""


class FeatureMetrics:
    """Lookups, hits, misses, value ages and freshness-SLA violations, per feature set
    version (``tx:3``). Updated once per lookup (a batch of keys), not once per value."""

    def __init__(self) -> None:
        self.lookup_latency: dict[str, Histogram] = {}
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        self.staleness: dict[str, Histogram] = {}
        self.violations: dict[tuple[str, str], int] = {}
        """``(set, feature)`` → values served past their max age (or refused for it)."""

    def lookup(self, featureset: str, latency_s: float, hits: int, misses: int) -> None:
        hist = self.lookup_latency.get(featureset)
        if hist is None:
            hist = self.lookup_latency[featureset] = Histogram(LATENCY_BUCKETS_S)
        hist.observe(latency_s)
        self.hits[featureset] = self.hits.get(featureset, 0) + hits
        self.misses[featureset] = self.misses.get(featureset, 0) + misses

    def age(self, featureset: str, age_s: float) -> None:
        hist = self.staleness.get(featureset)
        if hist is None:
            hist = self.staleness[featureset] = Histogram(AGE_BUCKETS_S)
        hist.observe(age_s)

    def violation(self, featureset: str, feature: str, count: int = 1) -> None:
        key = (featureset, feature)
        self.violations[key] = self.violations.get(key, 0) + count

    def families(self) -> Iterator[Metric]:
        labels = ("feature_set",)
        yield _histogram(
            "feature_lookup_seconds", "Online store reads, one per bound set per request.",
            labels, self.lookup_latency,
        )  # fmt: skip
        yield _counter("feature_hits", "Entity keys found in the online store.", labels,
                       {(k,): v for k, v in self.hits.items()})  # fmt: skip
        yield _counter("feature_misses", "Entity keys the online store had nothing for.",
                       labels, {(k,): v for k, v in self.misses.items()})  # fmt: skip
        yield _histogram(
            "feature_age_seconds", "Age of each looked-up entity row at serve time.",
            labels, self.staleness,
        )  # fmt: skip
        yield _counter(
            "feature_freshness_violations", "Feature values older than their freshness SLA.",
            ("feature_set", "feature"), self.violations,
        )  # fmt: skip


def _histogram(
    name: str, doc: str, labels: Sequence[str], values: Mapping[str, Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(_PREFIX + name, doc, labels=labels)
    for key, hist in list(values.items()):
        family.add_metric([key], hist.buckets(), hist.total)
    return family


def _counter(
    name: str, doc: str, labels: Sequence[str], values: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(_PREFIX + name, doc, labels=labels)
    for key, count in list(values.items()):
        family.add_metric(list(key), count)
    return family


class _Collector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()

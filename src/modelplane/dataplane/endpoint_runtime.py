"""The live objects behind endpoints: one bulkhead per route, routes with breakers.

- A :class:`ModelVersionRuntime` owns the worker pool and batcher of one model version as
  one endpoint uses it: its own processes (a bulkhead: another endpoint's load or crash
  never reaches it), the endpoint's replicas, batching and queue bound. It checks each
  batch's outputs against the endpoint's contract once per batch, not once per request.
- An :class:`EndpointRuntime` holds what a request needs, computed once: the compiled
  contract and its fast path, the routes with their breakers and weights, the fallback, the
  records codec and the metadata document.

A changed endpoint keeps the :class:`RouteRuntime` (workers, batcher, breaker, evidence) of
every route whose model version and per-version settings did not change, so a rollout's
weight change swaps only the routing, never restarts a worker. A replica count change
resizes the pool in place.

Shadows (:class:`ShadowRuntime`) reach a model version too, the same runtime as a route to
that version when there is one (a rollout keeps its canary routed at weight 0 while it is
a shadow), and compare its answers with the primary's in a :class:`ShadowComparison`.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from modelplane.core.batching import BatchingConfig
from modelplane.core.circuit import CircuitBreaker
from modelplane.core.gates import ShadowStats
from modelplane.core.plan import EndpointPlan, ModelSource
from modelplane.core.routing import WeightedChoice
from modelplane.core.validate import CompiledContract
from modelplane.dataplane.batcher import Batcher, BatcherConfig
from modelplane.dataplane.fallback import StaticFallback
from modelplane.dataplane.fastcheck import PlainInputs
from modelplane.dataplane.features_join import FeatureJoin, compile_join
from modelplane.dataplane.loader import LOADER
from modelplane.dataplane.metrics import GatewayMetrics
from modelplane.dataplane.pool import (
    PoolConfig,
    PoolFactory,
    PoolRequest,
    ReplicaPool,
    WorkerPool,
    WorkerSpec,
)
from modelplane.dataplane.records import RecordsCodec
from modelplane.dataplane.routestats import LABEL_KINDS, RouteStats
from modelplane.errors import InvalidSpec, WorkerFailed
from modelplane.spec.contract import FallbackKind
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.fields import FieldSpec

__all__ = [
    "EndpointConfig",
    "EndpointRuntime",
    "ModelSource",
    "ModelVersionRuntime",
    "OutputViolation",
    "RouteRuntime",
    "ShadowComparison",
    "ShadowRuntime",
    "build_endpoints",
    "describe",
    "resize_kept",
    "serves_same",
    "version_settings",
]

Arrays = dict[str, npt.NDArray[Any]]
_JSON = msgspec.json.Encoder()


class OutputViolation(WorkerFailed):
    """The model's answer broke the contract's output schema: the model's fault, not the
    caller's, so it is a server error (or the fallback) and counts against the route."""

    code = "output_contract_violation"


EndpointConfig = EndpointPlan
"""An endpoint spec and the model version each of its routes resolved to: the control
plane's :class:`~modelplane.core.plan.EndpointPlan`, the one plan both planes speak."""


def version_settings(endpoint: Endpoint, source: ModelSource) -> tuple[Any, ...]:
    """What a :class:`ModelVersionRuntime` is built from; equal settings can be reused (the
    replica count is not among them: a kept runtime is resized in place)."""
    return (
        endpoint.name,
        source,
        endpoint.contract,
        endpoint.batching,
        endpoint.max_queue_rows,
        endpoint.effective_timeout_ms,
    )


class ModelVersionRuntime:
    """One model version serving one endpoint: its worker processes and its batcher."""

    def __init__(
        self,
        source: ModelSource,
        endpoint: Endpoint,
        contract: CompiledContract,
        pool: PoolConfig,
        metrics: GatewayMetrics,
        pools: PoolFactory | None = None,
    ) -> None:
        self.source = source
        self.label = source.label
        self.settings_key = version_settings(endpoint, source)
        self.stats = RouteStats(endpoint.contract.slo.latency_ms)
        self._contract = contract
        self._contract_name = endpoint.contract.name
        self._keep: frozenset[str] | None = (
            frozenset(f.name for f in endpoint.contract.outputs)
            if endpoint.contract.outputs
            else None
        )
        timeout_s = endpoint.effective_timeout_ms / 1000
        resources = source.manifest.resources
        sandbox = pool.sandbox and pool.sandbox.for_package(
            source.directory, memory_mb=resources.memory_mb, gpus=resources.gpus,
            labels=source.manifest.labels,
        )  # fmt: skip
        spec = WorkerSpec(
            LOADER,
            args=(str(source.directory), str(source.digest)),
            paths=source.paths,
            sandbox=sandbox,
        )
        config = replace(
            pool,
            replicas=endpoint.replicas,
            request_timeout_s=max(pool.request_timeout_s, timeout_s),
        )
        name = f"{endpoint.name}/{source.label}"
        self.pool: ReplicaPool
        if pools is None:
            self.pool = WorkerPool(spec, source.manifest.signature, config, name=name)
        else:
            self.pool = pools(
                PoolRequest(name, spec, source.manifest.signature, config, endpoint.name,
                            source.label, endpoint.team, endpoint.tier, resources,
                            (str(source.directory), str(source.digest)))
            )  # fmt: skip
        batching = BatchingConfig(
            max_batch_size=endpoint.batching.max_batch_size,
            max_delay_s=endpoint.batching.max_delay_ms / 1000,
        )
        self.batcher = Batcher(
            self._predict_batch,
            BatcherConfig(
                batching=batching,
                max_queue_rows=endpoint.max_queue_rows,
                max_inflight_batches=endpoint.replicas,
                default_timeout_s=timeout_s,
            ),
        )
        self._metrics = metrics
        self._endpoint_name = endpoint.name
        self._metrics_source: object | None = None

    async def _predict_batch(self, arrays: Arrays, timeout_s: float) -> Arrays:
        rows = len(next(iter(arrays.values())))
        self._metrics.batch(self.label, rows)
        outputs = await self.pool.predict(arrays, timeout_s)
        violations = self._contract.validate_outputs(outputs, batch_size=rows)
        if violations:
            error = OutputViolation(
                f"the model's answer broke contract '{self._contract_name}'",
                details=[v.to_detail() for v in violations],
            )
            error.message = f"{error.message}: " + "; ".join(
                f"{v.field}: {v.problem}" for v in violations
            )
            raise error
        keep = self._keep
        if keep is not None and len(outputs) != len(keep):
            outputs = {name: array for name, array in outputs.items() if name in keep}
        return outputs

    @property
    def ready(self) -> bool:
        return not self.pool.stopping and any(r.state == "ready" for r in self.pool.replicas())

    async def resize(self, replicas: int) -> None:
        """Run ``replicas`` worker processes; new ones warm up before taking requests."""
        await self.pool.resize(replicas)
        self.batcher.config = replace(self.batcher.config, max_inflight_batches=replicas)

    async def start(self) -> None:
        # Registered here, not when built: a runtime whose endpoint fails to build or start
        # must leave no series behind (a duplicate series makes Prometheus reject a scrape).
        if self._metrics_source is None:
            self._metrics_source = self._metrics.add_source(
                self._endpoint_name,
                self.label,
                lambda: self.batcher.queued_rows,
                lambda: self.pool.restarts,
            )
        await self.pool.start()
        self.batcher.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self.batcher.stop(timeout_s)
        await self.pool.stop()
        if self._metrics_source is not None:
            self._metrics.remove_source(self._metrics_source)
            self._metrics_source = None


@dataclass(slots=True)
class RouteRuntime:
    """One route of an endpoint: the version it reaches and its breaker's state."""

    ref: str
    target: ModelVersionRuntime
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    pending_ok: int = 0
    """Successes not yet folded into ``breaker`` (folded at least every ``flush_at``)."""
    flush_at: float = 0.0


class ShadowComparison:
    """Cumulative counts of shadow answers against the primary's, for the same requests.

    One output is compared (the contract's first, else the first answered): labels by
    equality, numbers by relative error. Counters only grow; the rollout controller diffs
    two :meth:`snapshot` readings to get a step's window.
    """

    __slots__ = ("compared", "disagreed", "dropped", "failed", "output", "relative_error_sum")

    def __init__(self, output: str | None = None) -> None:
        self.output = output
        self.compared = 0
        self.disagreed = 0
        self.relative_error_sum = 0.0
        self.failed = 0
        """Shadow calls that raised (their errors also count on the shadow version's route)."""
        self.dropped = 0
        """Copies not sent because the shadow was already at its in-flight bound."""

    def compare(self, primary: Arrays, shadow: Arrays) -> None:
        name = self.output
        if name is None:
            name = self.output = next(iter(primary), None)
        if name is None or name not in primary or name not in shadow:
            return
        ours, theirs = primary[name], shadow[name]
        if ours.shape != theirs.shape or not ours.size:
            self.compared += max(len(ours), 1)
            self.disagreed += max(len(ours), 1)
            return
        rows = len(ours) if ours.ndim else 1
        self.compared += rows
        if ours.dtype.kind in LABEL_KINDS or theirs.dtype.kind in LABEL_KINDS:
            differ = np.not_equal(ours, theirs).reshape(rows, -1).any(axis=1)
            self.disagreed += int(differ.sum())
            return
        a = ours.astype(np.float64, copy=False).reshape(rows, -1)
        b = theirs.astype(np.float64, copy=False).reshape(rows, -1)
        scale = np.maximum(np.abs(a), 1e-12)
        per_row = (np.abs(b - a) / scale).mean(axis=1)
        total = float(per_row.sum())
        self.relative_error_sum += total if math.isfinite(total) else float(rows)

    def snapshot(self) -> ShadowStats:
        return ShadowStats(self.compared, self.disagreed, self.relative_error_sum)


@dataclass(slots=True)
class ShadowRuntime:
    """A sampled copy of the endpoint's traffic to ``target``; answers are only compared."""

    ref: str
    target: ModelVersionRuntime
    percent: float
    comparison: ShadowComparison
    max_inflight: int
    inflight: int = 0
    """Copies sent and not yet answered."""
    buffer: list[tuple[Arrays, Arrays]] = field(default_factory=list)
    """Copies waiting to go as one batch: (inputs, the answer the caller got)."""
    buffered_rows: int = 0
    timer: asyncio.TimerHandle | None = None
    """When the buffer goes out at the latest."""


class EndpointRuntime:
    """Everything about one endpoint that requests need, prepared once."""

    features: FeatureJoin | None = None
    """The request-time feature join; ``None`` for endpoints that bind no feature set."""

    def __init__(
        self,
        endpoint: Endpoint,
        contract: CompiledContract,
        routes: Sequence[RouteRuntime],
        rng: random.Random,
        shadows: Sequence[ShadowRuntime] = (),
    ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.routes = list(routes)
        self.shadows = list(shadows)
        self.rng = rng
        self.sticky_key = endpoint.sticky_key
        self.contract = contract
        self.plain = PlainInputs.build(endpoint.contract.inputs)
        self.v2_dtypes = tuple(
            (f.name, np.dtype(f.dtype.numpy))
            for f in endpoint.contract.inputs
            if f.dtype.v2 != "BYTES"
        )
        """Numeric inputs' dtypes, computed once: a v2 tensor declared otherwise is refused."""
        self.timeout_s = endpoint.effective_timeout_ms / 1000
        self.fallback = endpoint.effective_fallback
        self.static: StaticFallback | None = None
        if self.fallback.kind is FallbackKind.STATIC:
            self.static = StaticFallback(self.fallback.value, endpoint.contract.outputs)
        self.chooser = WeightedChoice([r.weight for r in endpoint.routes], rng)
        self.records = RecordsCodec(endpoint.contract.inputs)
        self.output_names: frozenset[str] | None = (
            frozenset(f.name for f in endpoint.contract.outputs)
            if endpoint.contract.outputs
            else None
        )
        self.metadata = _JSON.encode(self._metadata())

    @property
    def versions(self) -> list[str]:
        return [route.target.label for route in self.routes]

    @property
    def ready(self) -> bool:
        return any(route.target.ready for route in self.routes)

    @property
    def has_fallback(self) -> bool:
        return self.fallback.kind is not FallbackKind.NONE

    @property
    def targets(self) -> list[ModelVersionRuntime]:
        """Every model version this endpoint reaches, routes' and shadows', each once."""
        seen: dict[int, ModelVersionRuntime] = {}
        for target in [r.target for r in self.routes] + [s.target for s in self.shadows]:
            seen.setdefault(id(target), target)
        return list(seen.values())

    def route_for_version(self, version: str) -> RouteRuntime | None:
        for route in self.routes:
            if version in (route.target.label, route.target.source.version):
                return route
        return None

    def _metadata(self) -> dict[str, Any]:
        contract = self.endpoint.contract
        outputs = contract.outputs or self.routes[0].target.source.manifest.signature.outputs
        return {
            "name": self.name,
            "versions": self.versions,
            "platform": "modelplane",
            "inputs": [_tensor_metadata(f) for f in contract.inputs],
            "outputs": [_tensor_metadata(f) for f in outputs],
        }


def describe(endpoints: Iterable[EndpointRuntime]) -> list[dict[str, Any]]:
    """What ``GET /v1/endpoints`` lists: each endpoint's routes, weights and readiness."""
    listing = []
    for runtime in endpoints:
        spec = runtime.endpoint
        routes = [
            {"model": r.ref, "version": r.target.label, "weight": w.weight}
            for r, w in zip(runtime.routes, spec.routes, strict=True)
        ]
        listing.append(
            {
                "name": spec.name,
                "team": spec.team,
                "tier": spec.tier,
                "contract": {"name": spec.contract.name, "version": spec.contract.version},
                "versions": runtime.versions,
                "routes": routes,
                "shadows": [
                    {"model": sh.ref, "version": sh.target.label, "percent": sh.percent}
                    for sh in runtime.shadows
                ],
                "ready": runtime.ready,
            }
        )
    return listing


def _tensor_metadata(spec: FieldSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.dtype.v2, "shape": list(spec.shape)}


def build_endpoints(
    configs: Sequence[EndpointConfig],
    pool: PoolConfig,
    metrics: GatewayMetrics,
    rng: random.Random,
    *,
    also_served: Collection[str] = (),
    reuse: Mapping[str, EndpointRuntime] | None = None,
    pools: PoolFactory | None = None,
) -> tuple[dict[str, EndpointRuntime], list[ModelVersionRuntime]]:
    """Endpoints by name and the model version runtimes built for them (not those reused
    from ``reuse``, the endpoints served now); InvalidSpec on bad configs."""
    versions: list[ModelVersionRuntime] = []
    endpoints: dict[str, EndpointRuntime] = {}
    for config in configs:
        endpoint = config.endpoint
        if endpoint.name in endpoints:
            raise InvalidSpec(f"endpoint '{endpoint.name}' is configured twice")
        previous = reuse.get(endpoint.name) if reuse else None
        builder = _TargetBuilder(config, pool, metrics, previous, pools)
        runtime = endpoints[endpoint.name] = builder.build(rng)
        versions += builder.fresh
        join = compile_join(endpoint, config.featuresets, metrics.features)
        if join is not None:
            runtime.features, runtime.records = join, join.records
    _check_fallback_targets(endpoints, also_served)
    return endpoints, versions


class _TargetBuilder:
    """Builds one endpoint's runtime, reusing the model versions, routes and shadow
    comparisons of ``previous`` whose version and settings did not change."""

    def __init__(
        self,
        config: EndpointConfig,
        pool: PoolConfig,
        metrics: GatewayMetrics,
        previous: EndpointRuntime | None,
        pools: PoolFactory | None = None,
    ) -> None:
        self.config = config
        self.pools = pools
        self.endpoint = config.endpoint
        self.contract = CompiledContract.from_contract(self.endpoint.contract)
        self.pool = pool
        self.metrics = metrics
        self.previous = previous
        self.fresh: list[ModelVersionRuntime] = []
        self._built: dict[str, ModelVersionRuntime] = {}
        self._old = {t.source.label: t for t in previous.targets} if previous else {}

    def target(self, ref: str, field: str) -> ModelVersionRuntime:
        source = self.config.models.get(ref)
        if source is None:
            raise InvalidSpec(
                f"endpoint '{self.endpoint.name}': {field} '{ref}' was not resolved",
                details=[{"field": field, "problem": f"no package for '{ref}'"}],
            )
        if source.label in self._built:
            return self._built[source.label]
        target = self._old.get(source.label)
        if target is None or target.settings_key != version_settings(self.endpoint, source):
            target = ModelVersionRuntime(
                source, self.endpoint, self.contract, self.pool, self.metrics, self.pools
            )
            self.fresh.append(target)
        self._built[source.label] = target
        return target

    def build(self, rng: random.Random) -> EndpointRuntime:
        endpoint, previous = self.endpoint, self.previous
        old_routes = {r.ref: r for r in previous.routes} if previous else {}
        old_shadows = {s.ref: s for s in previous.shadows} if previous else {}
        routes: list[RouteRuntime] = []
        for route in endpoint.routes:
            target = self.target(route.model, "routes")
            kept = old_routes.get(route.model)
            routes.append(
                kept if kept and kept.target is target else RouteRuntime(route.model, target)
            )
        shadows: list[ShadowRuntime] = []
        for shadow in endpoint.shadows:
            target = self.target(shadow.model, "shadows")
            kept_shadow = old_shadows.get(shadow.model)
            comparison = (
                kept_shadow.comparison
                if kept_shadow is not None and kept_shadow.target is target
                else ShadowComparison(_first_output(endpoint))
            )
            # A shadow may hold half the queue at most: the primary always finds room.
            bound = max(endpoint.max_queue_rows // 2, 1)
            shadows.append(ShadowRuntime(shadow.model, target, shadow.percent, comparison, bound))
        return EndpointRuntime(endpoint, self.contract, routes, rng, shadows)


def _first_output(endpoint: Endpoint) -> str | None:
    outputs = endpoint.contract.outputs
    return outputs[0].name if outputs else None


def resize_kept(
    endpoints: Mapping[str, EndpointRuntime], fresh: Collection[ModelVersionRuntime]
) -> list[tuple[ModelVersionRuntime, int]]:
    """Reused model versions whose endpoint now asks for another replica count."""
    new = {id(v) for v in fresh}
    return [
        (target, runtime.endpoint.replicas)
        for runtime in endpoints.values()
        for target in runtime.targets
        if id(target) not in new and target.pool.config.replicas != runtime.endpoint.replicas
    ]


def _check_fallback_targets(
    endpoints: Mapping[str, EndpointRuntime], also_served: Collection[str]
) -> None:
    for runtime in endpoints.values():
        target = runtime.fallback.endpoint
        served = target in endpoints or target in also_served
        if runtime.fallback.kind is FallbackKind.ENDPOINT and not served:
            raise InvalidSpec(
                f"endpoint '{runtime.name}' falls back to '{target}', which is not served",
                details=[{"field": "fallback.endpoint", "problem": "unknown endpoint"}],
            )


def serves_same(runtime: EndpointRuntime, config: EndpointConfig) -> bool:
    """True when ``runtime`` already serves ``config`` (same spec, same package digests)."""
    if runtime.endpoint != config.endpoint:
        return False
    if (runtime.features.featuresets if runtime.features else {}) != dict(config.featuresets):
        return False
    digests = {ref: source.digest for ref, source in config.models.items()}
    reached = {route.ref: route.target.source.digest for route in runtime.routes}
    reached |= {shadow.ref: shadow.target.source.digest for shadow in runtime.shadows}
    return reached == digests

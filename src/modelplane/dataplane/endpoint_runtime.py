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
weight change swaps only the routing, never restarts a worker.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import numpy.typing as npt

from modelplane.core.batching import BatchingConfig
from modelplane.core.circuit import CircuitBreaker
from modelplane.core.routing import WeightedChoice
from modelplane.core.validate import CompiledContract
from modelplane.dataplane.batcher import Batcher, BatcherConfig
from modelplane.dataplane.fallback import StaticFallback
from modelplane.dataplane.fastcheck import PlainInputs
from modelplane.dataplane.features_join import FeatureJoin, compile_join
from modelplane.dataplane.loader import LOADER
from modelplane.dataplane.metrics import GatewayMetrics
from modelplane.dataplane.pool import PoolConfig, WorkerPool, WorkerSpec
from modelplane.dataplane.records import RecordsCodec
from modelplane.dataplane.routestats import RouteStats
from modelplane.errors import InvalidSpec, WorkerFailed
from modelplane.spec.contract import FallbackKind
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.fields import FieldSpec
from modelplane.spec.manifest import Manifest
from modelplane.types import Digest

__all__ = [
    "EndpointConfig",
    "EndpointRuntime",
    "ModelSource",
    "ModelVersionRuntime",
    "OutputViolation",
    "RouteRuntime",
    "build_endpoints",
    "describe",
    "serves_same",
    "version_settings",
]

Arrays = dict[str, npt.NDArray[Any]]
_JSON = msgspec.json.Encoder()


class OutputViolation(WorkerFailed):
    """The model's answer broke the contract's output schema: the model's fault, not the
    caller's, so it is a server error (or the fallback) and counts against the route."""

    code = "output_contract_violation"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A resolved model version: its package folder, manifest and digest.

    ``label`` is what responses name (``fraud:7``); ``paths`` are put first on the worker's
    ``sys.path`` (code a package imports that is not installed).
    """

    label: str
    directory: Path
    manifest: Manifest
    digest: Digest
    paths: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        """The part of ``label`` after the model name: ``7`` of ``fraud:7``."""
        return self.label.rpartition(":")[2]


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """An endpoint spec and the model version each of its routes resolved to."""

    endpoint: Endpoint
    models: Mapping[str, ModelSource]
    """Route model ref (as written in the spec) → the version it resolved to."""
    featuresets: Mapping[str, FeatureSet] = field(default_factory=dict)
    """The feature sets the endpoint binds, by ``name:version``."""


def version_settings(endpoint: Endpoint, source: ModelSource) -> tuple[Any, ...]:
    """What a :class:`ModelVersionRuntime` is built from; equal settings can be reused."""
    return (
        endpoint.name,
        source,
        endpoint.contract,
        endpoint.replicas,
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
        spec = WorkerSpec(
            LOADER, args=(str(source.directory), str(source.digest)), paths=source.paths
        )
        config = replace(
            pool,
            replicas=endpoint.replicas,
            request_timeout_s=max(pool.request_timeout_s, timeout_s),
        )
        name = f"{endpoint.name}/{source.label}"
        self.pool = WorkerPool(spec, source.manifest.signature, config, name=name)
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
        metrics.add_source(
            endpoint.name,
            source.label,
            lambda: self.batcher.queued_rows,
            lambda: self.pool.restarts,
        )

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

    async def start(self) -> None:
        await self.pool.start()
        self.batcher.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self.batcher.stop(timeout_s)
        await self.pool.stop()


@dataclass(slots=True)
class RouteRuntime:
    """One route of an endpoint: the version it reaches and its breaker's state."""

    ref: str
    target: ModelVersionRuntime
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    pending_ok: int = 0
    """Successes not yet folded into ``breaker`` (folded at least every ``flush_at``)."""
    flush_at: float = 0.0


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
    ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.routes = list(routes)
        self.contract = contract
        self.plain = PlainInputs.build(endpoint.contract.inputs)
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
) -> tuple[dict[str, EndpointRuntime], list[ModelVersionRuntime]]:
    """Endpoints by name and the model version runtimes built for them (not those reused
    from ``reuse``, the endpoints served now); InvalidSpec on bad configs."""
    versions: list[ModelVersionRuntime] = []
    endpoints: dict[str, EndpointRuntime] = {}
    for config in configs:
        endpoint = config.endpoint
        if endpoint.name in endpoints:
            raise InvalidSpec(f"endpoint '{endpoint.name}' is configured twice")
        contract = CompiledContract.from_contract(endpoint.contract)
        join = compile_join(endpoint, config.featuresets, metrics.features)
        previous = reuse.get(endpoint.name) if reuse else None
        old = {r.ref: r for r in previous.routes} if previous is not None else {}
        routes = []
        for route in endpoint.routes:
            source = config.models.get(route.model)
            if source is None:
                raise InvalidSpec(
                    f"endpoint '{endpoint.name}': route '{route.model}' was not resolved",
                    details=[{"field": "routes", "problem": f"no package for '{route.model}'"}],
                )
            kept = old.get(route.model)
            if kept is not None and kept.target.settings_key == version_settings(endpoint, source):
                routes.append(kept)
                continue
            target = ModelVersionRuntime(source, endpoint, contract, pool, metrics)
            versions.append(target)
            routes.append(RouteRuntime(route.model, target))
        runtime = endpoints[endpoint.name] = EndpointRuntime(endpoint, contract, routes, rng)
        if join is not None:
            runtime.features, runtime.records = join, join.records
    _check_fallback_targets(endpoints, also_served)
    return endpoints, versions


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
    return {route.ref: route.target.source.digest for route in runtime.routes} == digests

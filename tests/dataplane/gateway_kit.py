"""Builders for gateway tests: real packages, endpoints, and a gateway served on loopback.

Test modules load this file by path (``load_kit``), as ``test_pool`` loads ``fake_models``;
it registers itself and ``fake_models`` in ``sys.modules`` so every module shares one copy
(and packages built once are reused by the whole session).
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from modelplane.core.circuit import BreakerConfig
from modelplane.core.plan import EndpointPlan
from modelplane.dataplane.endpoint_runtime import EndpointConfig, ModelSource
from modelplane.dataplane.gateway import GatewayConfig
from modelplane.dataplane.pool import PoolConfig
from modelplane.registry.build import BuiltPackage, package
from modelplane.spec.contract import Contract, Fallback, FallbackKind
from modelplane.spec.endpoint import Batching, Endpoint, Route, Shadow
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.fields import FieldSpec, Range

__all__ = [
    "ECHO_FALLBACK",
    "FAST_POOL",
    "EndpointBuilder",
    "canary_and_shadow",
    "customers",
    "echo_contract",
    "echo_inputs",
    "fake_models",
    "gateway_config",
    "lr_data",
    "source",
]

HERE = Path(__file__).parent


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # registered so the python runtime can find the source file of its classes
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fake_models = _load("fake_models")

FAST_POOL = PoolConfig(
    start_timeout_s=30.0, backoff_base_s=0.05, backoff_max_s=0.2, stop_timeout_s=2.0
)
TEST_BREAKER = BreakerConfig(window_s=30.0, min_requests=4, error_rate=0.5, cool_down_s=0.5)
_ROOT = Path(tempfile.mkdtemp(prefix="modelplane-gateway-tests-"))
_BUILT: dict[str, BuiltPackage] = {}

ECHO_FALLBACK: dict[str, Any] = {"y": [0.0, 0.0, 0.0, 0.0], "n1": -1, "s_up": "", "b_not": False}
"""A static fallback for the echo contract: recognisable by ``n1 == -1``."""


def gateway_config(**overrides: Any) -> GatewayConfig:
    return replace(GatewayConfig(breaker=TEST_BREAKER, pool=FAST_POOL, seed=7), **overrides)


def _built(kind: str) -> BuiltPackage:
    if kind not in _BUILT:
        _BUILT[kind] = _BUILDERS[kind](_ROOT / kind)
    return _BUILT[kind]


def echo_inputs(rows: int = 1, first: float = 1.0) -> dict[str, np.ndarray[Any, Any]]:
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    x[0, 0] = first
    s = np.empty(rows, dtype=object)
    s[:] = ["hello"] * rows
    return {"x": x, "n": np.arange(rows, dtype=np.int64), "s": s, "b": np.ones(rows, dtype=bool)}


def _echo(path: Path) -> BuiltPackage:
    return package(fake_models.Echo(), name="echo", output_dir=path, runtime="python",
                   sample_input=echo_inputs(2))  # fmt: skip


def _steady(path: Path) -> BuiltPackage:
    return package(fake_models.SteadyEcho(), name="steady", output_dir=path, runtime="python",
                   sample_input=echo_inputs(2))  # fmt: skip


def lr_data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def _lr_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = lr_data()
    return LogisticRegression().fit(x, y)


def _sklearn(path: Path) -> BuiltPackage:
    return package(_lr_model(), name="lr", output_dir=path, sample_input=lr_data()[0][:4])


def _onnx(path: Path) -> BuiltPackage:
    from skl2onnx import to_onnx

    x = lr_data()[0]
    model = to_onnx(_lr_model(), x[:1], options={"zipmap": False})
    return package(model, name="lronnx", output_dir=path, sample_input=x[:4])


_BUILDERS = {"echo": _echo, "steady": _steady, "sklearn": _sklearn, "onnx": _onnx}


def source(kind: str, version: int = 1) -> ModelSource:
    """A model version (a key of ``_BUILDERS``), packaged once per session."""
    built = _built(kind)
    return ModelSource(f"{built.manifest.name}:{version}", built.path, built.manifest, built.digest)


def customers(version: int = 1) -> FeatureSet:
    """Feature set ``customers``: one int64 feature ``n`` (default 5) by ``customer_id``."""
    return FeatureSet.model_validate(
        {
            "name": "customers",
            "version": version,
            "team": "risk",
            "entity": {"name": "customer_id", "dtype": "string"},
            "features": [{"name": "n", "dtype": "int64", "default": 5}],
            "freshness": {"max_age_s": 60.0},
        }
    )


def canary_and_shadow(generation: int = 1) -> EndpointPlan:
    """``echo``: echo:1 at 100, echo:2 at 0 (started, no traffic), steady:1 as a 100 % shadow."""
    base = EndpointBuilder("echo", "echo", echo_contract()).build()
    v1, v2, steady = source("echo", 1), source("echo", 2), source("steady")
    spec: dict[str, Any] = base.endpoint.model_dump()
    spec["routes"] = [Route(model=v1.label, weight=100), Route(model=v2.label, weight=0)]
    spec["shadows"] = [Shadow(model=steady.label, percent=100)]
    endpoint = type(base.endpoint).model_validate(spec)
    models = {v1.label: v1, v2.label: v2, steady.label: steady}
    return EndpointPlan(endpoint, models, generation=generation)


def echo_contract(name: str = "echo", *, fallback: Fallback | None = None) -> Contract:
    """The echo signature, with a range on ``n`` and an enum on ``s`` to break."""
    signature = source("echo").manifest.signature
    inputs = []
    extra: dict[str, dict[str, Any]] = {
        "n": {"range": Range(min=0, max=1_000_000)},
        "s": {"enum": ("hello", "world", "a", "b", "")},
    }
    for spec in signature.inputs:
        changed = spec.model_copy(update=extra.get(spec.name, {}))
        inputs.append(FieldSpec.model_validate(changed.model_dump()))
    return Contract(
        name=name, inputs=tuple(inputs), outputs=signature.outputs, fallback=fallback or Fallback()
    )


@dataclass
class EndpointBuilder:
    """``EndpointBuilder("echo-fb", "echo").static_fallback(ECHO_FALLBACK).build()``."""

    name: str
    kind: str
    contract: Contract | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def static_fallback(self, value: Any) -> EndpointBuilder:
        self.settings["fallback"] = Fallback(kind=FallbackKind.STATIC, value=value)
        return self

    def endpoint_fallback(self, other: str) -> EndpointBuilder:
        self.settings["fallback"] = Fallback(kind=FallbackKind.ENDPOINT, endpoint=other)
        return self

    def batching(self, max_batch_size: int, max_delay_ms: float = 2.0) -> EndpointBuilder:
        self.settings["batching"] = Batching(
            max_batch_size=max_batch_size, max_delay_ms=max_delay_ms
        )
        return self

    def queue(self, rows: int) -> EndpointBuilder:
        self.settings["max_queue_rows"] = rows
        return self

    def timeout(self, ms: int) -> EndpointBuilder:
        self.settings["timeout_ms"] = ms
        return self

    def build(self) -> EndpointConfig:
        model = source(self.kind)
        signature = model.manifest.signature
        contract = self.contract or Contract(
            name=self.name, inputs=signature.inputs, outputs=signature.outputs
        )
        ref = model.label
        endpoint = Endpoint(
            name=self.name, team="test", contract=contract, routes=(Route(model=ref),),
            **self.settings,
        )  # fmt: skip
        return EndpointConfig(endpoint, {ref: model})

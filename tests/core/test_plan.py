"""One plan for both planes: the controller's resolved models are the gateway's sources."""

from __future__ import annotations

from tests.dataplane import gateway_kit as kit

from modelplane.controlplane.endpoints import EndpointPlan as ControllerPlan
from modelplane.controlplane.endpoints import ResolvedModel
from modelplane.core.plan import EndpointPlan, ModelSource
from modelplane.dataplane.endpoint_runtime import EndpointConfig
from modelplane.dataplane.endpoint_runtime import ModelSource as GatewaySource


def test_both_planes_speak_the_same_plan() -> None:
    assert ControllerPlan is EndpointPlan is EndpointConfig
    assert ResolvedModel is ModelSource is GatewaySource


def test_a_plan_keeps_its_generation_beside_what_the_gateway_reads() -> None:
    built = kit.source("echo", 7)  # a real package, as the controller resolves one
    source = ModelSource(built.label, built.directory, built.manifest, built.digest)
    assert source.version == "7"
    assert source == built
    endpoint = kit.EndpointBuilder("echo", "echo").build().endpoint
    plan = EndpointPlan(endpoint, {"echo:7": source}, generation=3)
    assert plan.generation == 3
    assert plan.featuresets == {}
    # what `modelplane serve` builds without a store: generation 0
    assert EndpointConfig(endpoint, {"echo:7": source}).generation == 0

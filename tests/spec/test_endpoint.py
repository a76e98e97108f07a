"""The Endpoint spec: validation with field paths, and YAML in and out."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.errors import InvalidSpec
from modelplane.spec.contract import FallbackKind
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.io import dump_yaml, load_yaml, parse

BASE: dict[str, Any] = {
    "name": "fraud-score",
    "team": "risk",
    "contract": {
        "name": "fraud",
        "inputs": [{"name": "amount", "dtype": "float64"}],
        "timeout_ms": 200,
        "fallback": {"kind": "static", "value": 0.0},
    },
    "routes": [{"model": "fraud:7", "weight": 95}, {"model": "fraud@canary", "weight": 5}],
}


def endpoint(**changes: Any) -> Endpoint:
    return parse(Endpoint, {**BASE, **changes})


def test_defaults_and_effective_settings() -> None:
    spec = endpoint()
    assert spec.kind == "Endpoint"
    assert spec.tier == "standard"
    assert spec.replicas == 1
    assert spec.batching.max_batch_size == 64
    assert spec.effective_timeout_ms == 200
    assert spec.effective_fallback.kind is FallbackKind.STATIC
    overridden = endpoint(timeout_ms=50, fallback={"kind": "none"})
    assert overridden.effective_timeout_ms == 50
    assert overridden.effective_fallback.kind is FallbackKind.NONE


def test_yaml_round_trip() -> None:
    spec = endpoint(labels={"owner": "risk"}, shadows=[{"model": "fraud:8", "percent": 10}])
    assert load_yaml(Endpoint, dump_yaml(spec)) == spec


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"routes": []}, "routes"),
        ({"routes": [{"model": "fraud"}]}, "routes[0].model"),
        ({"routes": [{"model": "fraud:0"}]}, "routes[0].model"),
        ({"routes": [{"model": "Fraud:1"}]}, "routes[0].model"),
        ({"routes": [{"model": "fraud:1", "weight": -1}]}, "routes[0].weight"),
        ({"routes": [{"model": "fraud:1", "weight": 0}]}, "(root)"),
        ({"routes": [{"model": "fraud:1"}, {"model": "fraud:1"}]}, "(root)"),
        ({"replicas": 0}, "replicas"),
        ({"batching": {"max_batch_size": 0}}, "batching.max_batch_size"),
        ({"max_queue_rows": 0}, "max_queue_rows"),
        ({"surprise": 1}, "surprise"),
        ({"fallback": {"kind": "endpoint", "endpoint": "fraud-score"}}, "(root)"),
    ],
)
def test_invalid_endpoints_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        endpoint(**changes)
    assert field in [d["field"] for d in caught.value.details]


def test_endpoint_is_frozen() -> None:
    spec = endpoint()
    with pytest.raises(ValueError):
        spec.replicas = 3  # type: ignore[misc]

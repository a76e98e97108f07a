"""The Rollout spec: defaults per strategy, validation naming the field, YAML in and out."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.errors import InvalidSpec
from modelplane.spec.io import dump_yaml, load_yaml, parse
from modelplane.spec.rollout import (
    CanaryStep,
    CustomGate,
    DriftGate,
    ErrorRateGate,
    MinSamplesGate,
    OnFail,
    RolloutSpec,
    ShadowStep,
    Strategy,
)

BASE: dict[str, Any] = {"endpoint": "fraud-score", "to": "fraud:8"}


def rollout(**changes: Any) -> RolloutSpec:
    return parse(RolloutSpec, {**BASE, **changes})


def test_no_file_needed_for_a_canary() -> None:
    spec = RolloutSpec(endpoint="fraud-score", to="fraud:8")
    assert (spec.api_version, spec.kind) == ("modelplane/v1", "Rollout")
    assert spec.strategy is Strategy.CANARY
    assert [s.weight for s in spec.steps if isinstance(s, CanaryStep)] == [5, 25, 50, 100]
    assert all(s.hold_s == 300 for s in spec.steps)
    assert [g.label for g in spec.gates] == [
        "min_samples",
        "error_rate",
        "latency",
        "drift",
        "shadow_disagreement",
    ]
    assert spec.on_fail is OnFail.ROLLBACK
    assert spec == rollout()


def test_default_steps_follow_the_strategy() -> None:
    shadow_first = rollout(strategy="shadow-then-canary")
    assert isinstance(shadow_first.steps[0], ShadowStep)
    assert shadow_first.steps[0].percent == 100
    assert len(shadow_first.steps) == 5
    blue_green = rollout(strategy="blue-green")
    assert blue_green.steps == (CanaryStep(weight=100),)


def test_steps_and_gates_from_yaml_without_kinds() -> None:
    text = """
endpoint: fraud-score
to: fraud@challenger
strategy: shadow-then-canary
steps:
  - {percent: 10, hold_s: 600}
  - {weight: 5, hold_s: 120}
  - {weight: 100, hold_s: 120}
gates:
  - {type: min_samples, requests: 500}
  - {type: error_rate, max_rate: 0.02, max_ratio: null}
  - {type: drift, output: label, js_max: 0.05}
  - {type: custom, function: "risk.gates:revenue_per_call", name: revenue}
on_fail: pause
max_duration_s: 7200
"""
    spec = load_yaml(RolloutSpec, text)
    assert spec.steps == (
        ShadowStep(percent=10, hold_s=600),
        CanaryStep(weight=5, hold_s=120),
        CanaryStep(weight=100, hold_s=120),
    )
    assert spec.gates[0] == MinSamplesGate(requests=500)
    assert spec.gates[1] == ErrorRateGate(max_rate=0.02, max_ratio=None)
    assert spec.gates[2] == DriftGate(output="label", js_max=0.05)
    assert isinstance(spec.gates[3], CustomGate)
    assert spec.gates[3].label == "revenue"
    assert load_yaml(RolloutSpec, dump_yaml(spec)) == spec


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"to": "fraud"}, "to", "is not 'name:version' or 'name@alias'"),
        ({"endpoint": "Fraud Score"}, "endpoint", "not a valid name"),
        ({"strategy": "big-bang"}, "strategy", "Input should be"),
        (
            {"steps": [{"weight": 50}, {"weight": 25}]},
            "steps",
            "steps[1]: canary weights must increase (25 after 50)",
        ),
        (
            {"steps": [{"weight": 5}, {"percent": 10}]},
            "steps",
            "steps[1]: a shadow step cannot follow",
        ),
        ({"steps": [{"weight": 0}]}, "steps[0].canary.weight", "greater than 0"),
        ({"steps": [{"percent": 10}, {"weight": 100}]}, "steps", "use shadow-then-canary"),
        (
            {"strategy": "shadow-then-canary", "steps": [{"weight": 100}]},
            "steps",
            "needs a shadow step",
        ),
        (
            {"strategy": "blue-green", "steps": [{"weight": 50}, {"weight": 100}]},
            "steps",
            "blue-green has exactly one step",
        ),
        ({"gates": [{"type": "latency", "quantile": 1.5}]}, "gates[0].quantile", "less"),
        ({"gates": [{"type": "vibes"}]}, "gates[0]", "does not match any of the expected tags"),
        (
            {"gates": [{"type": "custom", "function": "no_colon"}]},
            "gates[0].function",
            "'no_colon' is not 'module:function'",
        ),
        (
            {"gates": [{"type": "latency"}, {"type": "latency", "max_ms": 50}]},
            "gates",
            "gate 'latency' appears twice",
        ),
        ({"max_duration_s": 600}, "max_duration_s", "shorter than the steps' holds (1200s)"),
        ({"on_fail": "panic"}, "on_fail", "Input should be"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_validation_names_the_field(changes: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        rollout(**changes)
    detail = info.value.details[0]
    assert detail["field"] == field
    assert problem in detail["problem"]


def test_specs_are_frozen() -> None:
    spec = rollout()
    with pytest.raises(ValueError, match="frozen"):
        spec.on_fail = OnFail.PAUSE  # type: ignore[misc]

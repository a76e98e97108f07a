from __future__ import annotations

import pytest

from modelplane.errors import InvalidSpec
from modelplane.spec import dump_yaml, load_yaml, parse
from modelplane.spec.cluster import ClusterSpec
from modelplane.spec.policy import (
    DegradationStep,
    PlacementStrategy,
    Policy,
)
from modelplane.types import Tier

POLICY_YAML = """
api_version: modelplane/v1
kind: Policy
name: prod
teams:
  - name: search
    cohort: shared
    quotas:
      gpu: {nominal: 8000, borrowing_limit: 4000, lending_limit: 2000}
      gpu/A10: {nominal: 2000}
  - name: ads
    cohort: shared
    quotas:
      gpu: {nominal: 4000}
floors:
  - {tier: critical, resource: gpu, amount: 2000}
  - {team: search, amount: 1000}
placement: {strategy: fgd, seed: 7}
degradation:
  steps: [pause-batch-admission, shed-batch]
  enter_overload: 1.1
  exit_overload: 0.9
"""


def test_defaults_declare_the_three_tiers() -> None:
    policy = Policy()
    assert [t.name for t in policy.tiers] == ["critical", "standard", "batch"]
    critical = policy.tier(Tier.CRITICAL)
    assert not critical.preemptible
    assert not critical.scale_to_zero
    assert critical.min_warm_replicas == 1
    assert policy.tier("batch").preemptible
    assert policy.tier("nonexistent").priority == 0
    assert policy.degradation.steps == tuple(DegradationStep)


def test_yaml_round_trip() -> None:
    policy = load_yaml(Policy, POLICY_YAML)
    assert policy.placement.strategy is PlacementStrategy.FGD
    search = policy.team("search")
    assert search is not None
    assert search.quotas["gpu"].borrowing_limit == 4000
    assert load_yaml(Policy, dump_yaml(policy)) == policy


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (
            {"teams": [{"name": "a", "quotas": {"gpu": {"nominal": 1, "lending_limit": 2}}}]},
            "teams[0].quotas.gpu",
            "lending_limit cannot exceed nominal (1)",
        ),
        (
            {"teams": [{"name": "a", "quotas": {"tpu": {"nominal": 1}}}]},
            "teams[0].quotas.tpu.[key]",
            "'tpu' is not a resource (cpu, memory, gpu or gpu/<MODEL>)",
        ),
        ({"floors": [{"amount": 1}]}, "floors[0]", "a floor needs a tier, a team or both"),
        ({"floors": [{"tier": "gold", "amount": 1}]}, "(root)", "unknown tier 'gold'"),
        (
            {"teams": [{"name": "a"}, {"name": "a"}]},
            "(root)",
            "team 'a' is declared twice",
        ),
        (
            {"degradation": {"enter_overload": 1.0, "exit_overload": 1.0}},
            "degradation",
            "exit_overload must be below enter_overload (hysteresis)",
        ),
        (
            {"tiers": [{"name": "x", "priority": 1, "min_warm_replicas": 2}]},
            "tiers[0]",
            "a tier that keeps warm replicas cannot scale to zero",
        ),
        ({"placement": {"strategy": "worst-fit"}}, "placement.strategy", None),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_policies_name_the_field(
    change: dict[str, object], field: str, problem: str | None
) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse(Policy, change)
    detail = info.value.details[0]
    assert detail["field"] == field
    if problem is not None:
        assert detail["problem"] == problem


def test_user_defined_tiers() -> None:
    policy = parse(
        Policy,
        {
            "tiers": [
                {"name": "gold", "priority": 10, "preemptible": False, "scale_to_zero": False},
                {"name": "bronze", "priority": 1},
            ],
            "floors": [{"tier": "gold", "amount": 1000}],
        },
    )
    assert policy.tier("gold").priority == 10


def test_cluster_spec_rejects_duplicate_nodes() -> None:
    node = {"name": "n1", "cpu_milli": 1000, "memory_mib": 1024}
    with pytest.raises(InvalidSpec) as info:
        parse(ClusterSpec, {"nodes": [node, node]})
    assert "node 'n1' is declared twice" in str(info.value)
    spec = parse(
        ClusterSpec,
        {
            "nodes": [
                {**node, "gpus": {"model": "A10", "count": 2, "memory_mib": 24576}},
                {"name": "n2", "cpu_milli": 1, "memory_mib": 1, "cost_per_hour": 1.5},
            ]
        },
    )
    assert spec.gpu_count == 2

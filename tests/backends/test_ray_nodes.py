"""Ray's node records as modelplane nodes, and the exposure check (no Ray needed)."""

from __future__ import annotations

import pytest

from modelplane.backends.ray_nodes import exposure_findings, is_loopback, nodes_from_ray

GIB = float(1 << 30)


def raw(
    node_id: str, *, alive: bool = True, labels: dict[str, str] | None = None
) -> dict[str, object]:
    return {
        "NodeID": node_id,
        "Alive": alive,
        "Resources": {
            "CPU": 8.0,
            "memory": 16 * GIB,
            "GPU": 4.0,
            "accelerator_type:H100": 1.0,
            "licence:solver": 2.0,
            "node:10.0.0.5": 1.0,
        },
        "Labels": {"ray.io/node-id": node_id, **(labels or {})},
    }


def test_a_ray_node_keeps_its_capacity_gpu_model_price_and_custom_resources() -> None:
    labels = {
        "modelplane.io/node": "gpu-1",
        "modelplane.io/cost-per-hour": "12.5",
        "modelplane.io/gpu-memory-mib": "81559",
    }
    (node,) = nodes_from_ray([raw("ab" * 28, labels=labels)])
    assert (node.name, node.cpu_milli, node.memory_mib) == ("gpu-1", 8000, 16384)
    assert (node.gpu_model, node.gpu_count, node.gpu_memory_mib) == ("H100", 4, 81559)
    assert node.cost_per_hour == 12.5
    assert dict(node.resources) == {"licence:solver": 2.0}
    assert "ray.io/node-id" not in node.labels


def test_an_unnamed_node_is_named_by_its_id_and_the_live_record_wins() -> None:
    nodes = nodes_from_ray([raw("cd" * 28, alive=False), raw("cd" * 28)])
    assert [(n.name, n.alive) for n in nodes] == [("ray-cdcdcdcdcdcd", True)]


def test_a_bad_price_label_names_the_label() -> None:
    with pytest.raises(ValueError, match=r"modelplane\.io/cost-per-hour='cheap'"):
        nodes_from_ray([raw("ef" * 28, labels={"modelplane.io/cost-per-hour": "cheap"})])


def test_an_exposed_dashboard_without_tokens_is_reported() -> None:
    findings = exposure_findings("0.0.0.0:8265", token_auth=False, gcs_address="10.0.0.5:6379")
    assert len(findings) == 2
    assert "0.0.0.0:8265" in findings[0]
    assert "CVE-2023-48022" in findings[0]
    assert "runs code for anyone" in findings[0]
    assert "RAY_AUTH_MODE=token" in findings[1]


def test_a_loopback_dashboard_with_tokens_is_quiet() -> None:
    assert exposure_findings("127.0.0.1:8265", token_auth=True, gcs_address="10.0.0.5:6379") == []
    assert exposure_findings(None, token_auth=True, gcs_address="10.0.0.5:6379") == []
    assert is_loopback("localhost")
    assert is_loopback("[::1]")
    assert not is_loopback("ray-head.internal")

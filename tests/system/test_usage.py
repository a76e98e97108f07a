"""The cluster model as ``up``'s usage sampler reads it: this machine detected once and
first, declared nodes beside it, prices re-read from ``cluster.yaml`` at every call. (The
gateway side, :class:`GatewayReplicas`, is read by a real ``up`` in test_report_cli.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.controlplane.nodes import detect_local_node
from modelplane.errors import InvalidSpec
from modelplane.system.usage import LocalCluster

DECLARED = """
kind: Cluster
local: {{cost_per_hour: {price}}}
nodes:
  - {{name: {name}, cpu_milli: 16000, memory_mib: 65536, cost_per_hour: 0.68}}
"""


def test_this_machine_first_and_prices_re_read(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(DECLARED.format(price=0.4, name="cpu-1"))
    cluster = LocalCluster(path)
    local, declared = cluster()
    here = detect_local_node()
    assert (local.name, local.cpu_milli, local.cost_per_hour) == (here.name, here.cpu_milli, 0.4)
    assert (declared.name, declared.cost_per_hour) == ("cpu-1", 0.68)
    path.write_text(DECLARED.format(price=0.9, name="cpu-1"))
    assert cluster()[0].cost_per_hour == 0.9
    assert cluster.gpu_model == (here.gpus.model if here.gpus else None)


def test_a_declared_node_named_like_this_machine_replaces_it(tmp_path: Path) -> None:
    here = detect_local_node()
    path = tmp_path / "cluster.yaml"
    path.write_text(DECLARED.format(price=0.4, name=here.name))
    (only,) = LocalCluster(path)()
    assert (only.name, only.cpu_milli, only.cost_per_hour) == (here.name, 16000, 0.68)


def test_no_file_is_this_machine_at_no_price_and_a_bad_file_is_named(tmp_path: Path) -> None:
    (local,) = LocalCluster(tmp_path / "absent.yaml")()
    assert local.cost_per_hour == 0.0
    bad = tmp_path / "cluster.yaml"
    bad.write_text("kind: Cluster\nlocal: {cost_per_hour: -1}\n")
    with pytest.raises(InvalidSpec, match="cost_per_hour"):
        LocalCluster(bad)()


def test_on_a_backend_the_nodes_are_its_live_ones_priced_by_label_or_cluster_yaml(
    tmp_path: Path,
) -> None:
    from modelplane.spec.cluster import ClusterSpec, NodeSpec
    from modelplane.system.usage import BackendCluster

    path = tmp_path / "cluster.yaml"
    path.write_text(
        "kind: Cluster\nname: ray\nnodes:\n"
        "  - {name: head, cpu_milli: 1000, memory_mib: 1024, cost_per_hour: 1.5}\n"
        "  - {name: w1, cpu_milli: 1000, memory_mib: 1024, cost_per_hour: 9.0}\n"
        "  - {name: elsewhere, cpu_milli: 1000, memory_mib: 1024, cost_per_hour: 3.0}\n"
    )
    live = ClusterSpec(nodes=(
        NodeSpec(name="head", cpu_milli=2000, memory_mib=4096),
        NodeSpec(name="w1", cpu_milli=2000, memory_mib=4096, cost_per_hour=2.5),
        NodeSpec(name="w2", cpu_milli=2000, memory_mib=4096),
    ))  # fmt: skip
    nodes = BackendCluster(LocalCluster(path), lambda: live)()
    # the label wins, cluster.yaml prices an unlabelled node, a node with neither is free;
    # declared nodes that are not the backend's, and this machine, are not offered
    assert [(n.name, n.cost_per_hour) for n in nodes] == [("head", 1.5), ("w1", 2.5), ("w2", 0.0)]
    assert BackendCluster(LocalCluster(path), lambda: ClusterSpec(nodes=()))() == ()
    # while the head cannot be read (no live node), the nodes last seen are offered still
    readings = iter([live, ClusterSpec(nodes=())])
    flaky = BackendCluster(LocalCluster(path), lambda: next(readings))
    assert flaky() == flaky()

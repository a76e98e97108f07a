"""The local node: the real machine, and fake /proc and cgroup trees under a root path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelplane.controlplane.nodes import (
    cluster_nodes,
    cpu_millicores,
    detect_local_node,
    live_cluster,
    load_cluster,
    memory_mib,
    node_name,
    parse_gpus,
    query_nvidia_smi,
)
from modelplane.core.cluster import ClusterSnapshot
from modelplane.errors import InvalidSpec
from modelplane.spec.cluster import ClusterSpec, LocalNodeSpec, NodeSpec

H100 = "NVIDIA H100 80GB HBM3, 81559 MiB\nNVIDIA H100 80GB HBM3, 81559 MiB\n"


class FakeHost:
    """A root folder laid out like /proc and /sys/fs/cgroup."""

    def __init__(self, root: Path, mem_kib: int = 16 * 1024 * 1024) -> None:
        self.root = root
        self.write("proc/meminfo", f"MemTotal:       {mem_kib} kB\nMemFree:  1 kB\n")

    def write(self, path: str, text: str) -> FakeHost:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return self

    def cgroup(self, path: str) -> FakeHost:
        return self.write("proc/self/cgroup", f"0::{path}\n")


def test_the_real_machine_is_a_node() -> None:
    node = detect_local_node()
    assert node.cpu_milli <= len(os.sched_getaffinity(0)) * 1000
    assert node.memory_mib > 0
    assert node.labels["modelplane.io/local"] == "true"
    assert node.cost_per_hour == 0.0
    if query_nvidia_smi() is None:
        assert node.gpus is None
    else:
        assert node.gpus is not None
    ClusterSnapshot.from_spec(ClusterSpec(nodes=(node,)))  # the scheduler takes it


def test_no_cgroup_limits_means_cpus_and_memtotal(tmp_path: Path) -> None:
    FakeHost(tmp_path, mem_kib=8 * 1024 * 1024)
    assert cpu_millicores(tmp_path, cpus=4) == 4000
    assert memory_mib(tmp_path) == 8192


def test_cgroup_v2_limits_of_own_cgroup_and_ancestors(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).cgroup("/kube/pod1/ctr")
    host.write("sys/fs/cgroup/kube/pod1/ctr/cpu.max", "max 100000")
    host.write("sys/fs/cgroup/kube/pod1/cpu.max", "250000 100000")
    host.write("sys/fs/cgroup/kube/cpu.max", "800000 100000")
    host.write("sys/fs/cgroup/kube/pod1/ctr/memory.max", "max")
    host.write("sys/fs/cgroup/kube/memory.max", str(3 * 1024**3))
    assert cpu_millicores(tmp_path, cpus=8) == 2500
    assert memory_mib(tmp_path) == 3072


def test_cgroup_v1_limits(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000")
    host.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000")
    host.write("sys/fs/cgroup/memory/memory.limit_in_bytes", str(2 * 1024**3))
    assert cpu_millicores(tmp_path, cpus=4) == 1500
    assert memory_mib(tmp_path) == 2048


def test_cgroup_v1_unlimited_is_ignored(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, mem_kib=1024 * 1024)
    host.write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1")
    host.write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000")
    host.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712")
    assert cpu_millicores(tmp_path, cpus=2) == 2000
    assert memory_mib(tmp_path) == 1024


def test_unreadable_memory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="meminfo"):
        memory_mib(tmp_path)


def test_gpus_from_nvidia_smi_csv() -> None:
    gpus = parse_gpus(H100)
    assert gpus is not None
    assert (gpus.model, gpus.count, gpus.memory_mib) == ("H100-80GB-HBM3", 2, 81559)
    mixed = parse_gpus("NVIDIA A10, 24000 MiB\nTesla T4, 15000 MiB\nNVIDIA A10, 23000 MiB\n")
    assert mixed is not None
    assert (mixed.model, mixed.count, mixed.memory_mib) == ("A10", 2, 23000)
    assert parse_gpus(None) is None
    assert parse_gpus("\n") is None


def test_detected_node_with_fake_host(tmp_path: Path) -> None:
    FakeHost(tmp_path).cgroup("/").write("sys/fs/cgroup/cpu.max", "50000 100000")
    local = LocalNodeSpec(labels={"zone": "lab"}, cost_per_hour=2.5)
    node = detect_local_node(
        tmp_path, local=local, cpus=16, gpu_query=lambda: H100, hostname="GPU_Box.lan", arch="arm"
    )
    assert node.name == "gpu_box.lan"
    assert node.cpu_milli == 500
    assert node.memory_mib == 16384
    assert node.gpus is not None
    assert node.gpus.count == 2
    assert node.labels["zone"] == "lab"
    assert node.labels["modelplane.io/arch"] == "arm"
    assert node.cost_per_hour == 2.5


@pytest.mark.parametrize(
    ("hostname", "name"), [("vm", "vm"), ("My Host!", "my-host"), ("---", "local"), ("", "local")]
)
def test_node_names(hostname: str, name: str) -> None:
    assert node_name(hostname) == name


def test_declared_nodes_beside_the_local_one(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(
        "kind: Cluster\n"
        "local: {name: here, cost_per_hour: 1.0}\n"
        "nodes:\n"
        "  - {name: gpu-1, cpu_milli: 32000, memory_mib: 131072,"
        " gpus: {model: A10, count: 4}, cost_per_hour: 3.2}\n"
    )
    spec = live_cluster(tmp_path / "cluster.yaml")
    assert [n.name for n in spec.nodes] == ["here", "gpu-1"]
    assert spec.nodes[0].cost_per_hour == 1.0
    assert load_cluster(tmp_path / "missing.yaml") == ClusterSpec()
    assert [n.name for n in live_cluster(None).nodes] == [node_name(os.uname().nodename)]


def test_a_declared_node_replaces_the_detected_one() -> None:
    local = NodeSpec(name="box", cpu_milli=8000, memory_mib=1000)
    declared = ClusterSpec(nodes=(NodeSpec(name="box", cpu_milli=4000, memory_mib=500),))
    assert cluster_nodes(declared, local).nodes == declared.nodes
    assert cluster_nodes(ClusterSpec(), local).nodes == (local,)
    off = ClusterSpec(local=LocalNodeSpec(detect=False))
    assert cluster_nodes(off, None).nodes == ()

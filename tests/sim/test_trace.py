"""Trace files by the public names, both pod-list shapes, and clear errors before a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.errors import InvalidSpec, NotFound
from modelplane.sim.runner import load_trace, run_simulation
from modelplane.sim.trace import find_nodes_file, find_pods_file, read_nodes, read_pods
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy

NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"
FIVE_COLUMNS = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"


def _nodes(folder: Path, rows: int = 6, name: str = "openb_node_list_gpu_node.csv") -> Path:
    body = "".join(
        f"node-{i},64000,262144,{(2, 8)[i % 2]},{('T4', 'G2')[i % 2]}\n" for i in range(rows)
    )
    path = folder / name
    path.write_text(NODE_HEADER + body)
    return path


def _multigpu(folder: Path, name: str = "openb_pod_list_multigpu50.csv") -> Path:
    rows = [
        "pod-0,4000,16384,1,500",
        "pod-1,8000,32768,2,1000",
        "pod-2,2000,8192,0,0",
        "pod-3,16000,65536,8,1000",
        "pod-4,4000,16384,1,1000",
    ]
    path = folder / name
    path.write_text(FIVE_COLUMNS + "\n".join(rows) + "\n")
    return path


def _fgd() -> list[tuple[str, Policy]]:
    return [("fgd", Policy(placement=PlacementPolicy(strategy=PlacementStrategy.FGD)))]


def test_public_file_names_and_the_five_column_pod_list(tmp_path: Path) -> None:
    _nodes(tmp_path)
    _nodes(tmp_path, name="openb_node_list_all_node.csv")
    _multigpu(tmp_path)
    assert find_pods_file(tmp_path).name == "openb_pod_list_multigpu50.csv"  # the only one
    assert find_nodes_file(tmp_path).name == "openb_node_list_gpu_node.csv"
    assert find_nodes_file(tmp_path, "all").name == "openb_node_list_all_node.csv"
    pods = read_pods(tmp_path / "openb_pod_list_multigpu50.csv")
    assert [p.workload.demand.gpu_total for p in pods] == [500, 2000, 0, 8000, 1000]
    # No QoS and no times: best-effort batch work that never ends by itself.
    assert {p.workload.tier for p in pods} == {"batch"}
    assert all(p.duration_s is None for p in pods)
    result = run_simulation(str(tmp_path), _fgd(), seeds=2, pods="multigpu50")
    (item,) = result.results
    assert all(r.arrived > len(pods) for r in item.runs)  # inflated past the list
    assert "openb_pod_list_multigpu50.csv on openb_node_list_gpu_node.csv" in result.experiment
    assert item.summary["unallocated_pct_at_100"] < 100.0


def test_a_prefixed_name_and_a_choice_among_several(tmp_path: Path) -> None:
    _nodes(tmp_path, name="alibaba-gpu-v2023-openb_node_list_gpu_node.csv")
    _multigpu(tmp_path, "alibaba-gpu-v2023-openb_pod_list_default.csv")
    _multigpu(tmp_path, "openb_pod_list_gpushare40.csv")
    assert find_pods_file(tmp_path).name.endswith("pod_list_default.csv")
    assert find_pods_file(tmp_path, "gpushare40").name == "openb_pod_list_gpushare40.csv"
    with pytest.raises(NotFound, match=r"gpuspec10\.csv.*found openb_pod_list files"):
        find_pods_file(tmp_path, "gpuspec10")


@pytest.mark.parametrize(
    ("pods", "nodes", "message"),
    [
        (FIVE_COLUMNS, None, "the pod list has no rows"),
        (FIVE_COLUMNS + "p0,1000,1024,0,0\np1,2000,2048,0,0\n", None, "every pod is CPU-only"),
        (None, NODE_HEADER, "the node list has no rows"),
        (None, NODE_HEADER + "n0,64000,262144,-2,T4\n", r":2 \(node n0\): gpu=-2 is below 0"),
        (None, NODE_HEADER + "n0,64000,262144,0,\n", "the node list has no GPU"),
        ("name,cpu,mem\np0,1,2\n", None, "missing column.*memory_mib"),
        (FIVE_COLUMNS + "p0,1000,1024,1,1500\n", None, r"p0\): gpu_milli=1500 is not in 1..1000"),
        (FIVE_COLUMNS + "p0,lots,1024,1,500\n", None, r"cpu_milli='lots' is not an integer"),
    ],
)
def test_bad_files_are_one_clear_error_before_the_run(
    tmp_path: Path, pods: str | None, nodes: str | None, message: str
) -> None:
    if pods is None:
        _multigpu(tmp_path, "openb_pod_list_default.csv")
    else:
        (tmp_path / "openb_pod_list_default.csv").write_text(pods)
    if nodes is None:
        _nodes(tmp_path)
    else:
        (tmp_path / "openb_node_list_gpu_node.csv").write_text(nodes)
    with pytest.raises(InvalidSpec, match=message):
        load_trace(str(tmp_path), None)


def test_bad_options_are_named() -> None:
    with pytest.raises(InvalidSpec, match="--experiment 'sideways'"):
        load_trace("synthetic", None, experiment="sideways")
    with pytest.raises(InvalidSpec, match="--durations 'exp:-1'"):
        load_trace("synthetic", None, durations="exp:-1")
    with pytest.raises(InvalidSpec, match="--sample 0"):
        load_trace("synthetic", None, sample=0)


def test_sample_is_random_per_seed_and_shortens_the_run(tmp_path: Path) -> None:
    _nodes(tmp_path, rows=40)
    # The first rows are CPU-only: taking the head of the file would sample no GPU pod.
    rows = [f"cpu-{i},2000,4096,0,0" for i in range(30)]
    rows += [f"gpu-{i},4000,16384,1,{(250, 500, 1000)[i % 3]}" for i in range(90)]
    (tmp_path / "openb_pod_list_default.csv").write_text(FIVE_COLUMNS + "\n".join(rows) + "\n")
    full = load_trace(str(tmp_path), None)
    small = load_trace(str(tmp_path), None, sample=30)
    nodes_full, arrivals_full = full.scenario(42)
    nodes_42, arrivals_42 = small.scenario(42)
    nodes_43, arrivals_43 = small.scenario(43)
    assert len(nodes_full) == 40
    assert len(nodes_42) == len(nodes_43) == 10  # a quarter of the pods, a quarter of nodes
    assert len(arrivals_42) < len(arrivals_full) / 2
    names_42 = {a.workload.name.split("#")[0] for a in arrivals_42}
    names_43 = {a.workload.name.split("#")[0] for a in arrivals_43}
    assert names_42 != names_43
    assert len(names_42) <= 30
    assert any(n.startswith("gpu-") for n in names_42)
    assert small.scenario(42)[1] == arrivals_42  # the same seed, the same sample


def test_read_nodes_keeps_the_trace_shape() -> None:
    from .test_simulator import _traces

    traces = _traces()
    gpu_nodes = read_nodes(find_nodes_file(traces))
    assert len(gpu_nodes) == 1213
    assert sum(n.gpu_count for n in gpu_nodes) == 6212
    assert len(read_nodes(find_nodes_file(traces, "all"))) == 1523

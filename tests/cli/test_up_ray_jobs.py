"""``modelplane up --backend ray`` runs a job's shards as Ray tasks: the same ``Job`` YAML as
on the local backend, against a real three-node Ray cluster on loopback (token
authentication, no dashboard), admitted against Ray's nodes rather than this machine's
cluster model, each shard's process started by a Ray worker of a cluster node (never by
``up``), every shard written once and the outputs the model's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import yaml
from tests.kit import UpProcess, cli, home_env, running_up, wait_for
from tests.kit.jobs import COLUMNS, build_model, frame_of, job_doc, read_output, write_parquet
from tests.kit.ray_cluster import NodeShape, RayTestCluster, ray_test_cluster

pytest.importorskip("ray")

# Ray clusters are started on one xdist worker, one after another: two at once on two
# cores starve each other past their start-up timeouts.
pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.timeout(420)]

ROWS = 900
SHARDS = 3
TEMPLATE = "modelplane.backends.jobs.template"
"""What a shard executor's warm template runs: every shard process is its fork."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    # One core a node and one core a shard: shards that run at once run on different nodes.
    with ray_test_cluster(NodeShape("head", 1), [NodeShape("w1", 1), NodeShape("w2", 1)]) as up:
        yield up


def served(up: UpProcess, name: str) -> dict[str, Any]:
    """The job as the control API answers; empty while ``up`` is not listening yet."""
    try:
        response = httpx.get(f"{up.api_url}/v1/jobs/{name}", timeout=30)
    except httpx.TransportError:
        return {}
    found: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return found


def template_owners(cluster: RayTestCluster, up_pid: int) -> dict[int, str]:
    """Each shard template of this test's processes, and who started it: the Ray node whose
    raylet it descends from (through the Ray worker running the task), or ``up``."""
    raylets = {
        info.process.pid: name
        for name, node in cluster.nodes.items()
        for info in node.all_processes.get("raylet", ())
    }
    owners: dict[int, str] = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        if TEMPLATE not in " ".join(process.info["cmdline"] or ()):
            continue
        try:
            ancestors = process.parents()
        except psutil.Error:  # it ended while we looked
            continue
        for ancestor in ancestors:
            if ancestor.pid == up_pid:
                owners[process.pid] = "up"
                break
            if ancestor.pid in raylets:
                owners[process.pid] = raylets[ancestor.pid]
                break
    return owners


def test_up_on_ray_runs_job_shards_as_ray_tasks(
    cluster: RayTestCluster, tmp_path: Path, postgres_url: str
) -> None:
    env = home_env(tmp_path / "home") | cluster.join_env()
    env["MODELPLANE_DATABASE_URL"] = postgres_url
    # This machine's cluster model has no room for even one shard: on the local backend
    # the job would wait for capacity for ever; on Ray it is admitted against Ray's nodes.
    tiny = {"name": "tiny", "cpu_milli": 100, "memory_mib": 64}
    home = Path(env["MODELPLANE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "cluster.yaml").write_text(
        yaml.safe_dump({"kind": "Cluster", "nodes": [tiny], "local": {"detect": False}})
    )
    folder, _ = build_model(tmp_path / "pkg")
    cli(env, "push", str(folder), "--alias", "champion", "--team", "risk")
    frame = frame_of(ROWS)
    write_parquet(frame, tmp_path / "txns.parquet")
    out = tmp_path / "scores"
    doc = job_doc(
        "ray-nightly", tmp_path / "txns.parquet", out, model="fraud@champion",
        parallelism=(1, SHARDS), shard={"count": SHARDS},
    )  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    cli(env, "jobs", "submit", str(tmp_path / "job.yaml"))

    owners: dict[int, str] = {}
    with running_up(env, "--no-auth", "--backend", "ray", "--ray-address", cluster.address) as up:

        def finished() -> dict[str, Any] | None:
            # a shard's template is watched while it runs too: it lives as long as its worker
            owners.update(template_owners(cluster, up.process.pid))
            job = served(up, "ray-nightly")
            return job if job.get("state") in ("succeeded", "failed") else None

        job = wait_for(finished, 240, "the job on Ray", every_s=0.2)
        owners.update(template_owners(cluster, up.process.pid))
    output = up.stop()
    assert "Traceback" not in output, output
    assert job["state"] == "succeeded", job["reason"]
    assert job["rows"] == {"done": ROWS, "total": ROWS}
    assert job["shards"]["total"] == SHARDS
    assert [(s["state"], s["attempts"], s["failures"]) for s in job["shard_list"]] == [
        ("done", 1, 0)
    ] * SHARDS, job["shard_list"]
    # every shard written once, in order, and the scores are the model's own
    parts = sorted(p.name for p in out.glob("part-*"))
    assert parts == [f"part-{i:05d}.parquet" for i in range(SHARDS)]
    scores = read_output(out)
    assert scores["txn_id"].tolist() == list(range(ROWS))
    from modelplane.backends.jobs.runner import load_model

    expected = load_model(str(folder), None).predict(
        {c: frame[c].to_numpy(np.float32) for c in COLUMNS}
    )
    got = np.stack(scores["probabilities"].to_numpy())
    assert np.allclose(got, expected["probabilities"], rtol=1e-6, atol=1e-7)
    # the shards ran as Ray tasks: their processes were started by Ray workers of the
    # cluster's nodes, none by up, and on more than one node (a core each)
    assert owners, "no shard process was seen"
    assert "up" not in owners.values(), owners
    assert len(set(owners.values())) >= 2, owners


def test_the_jobs_capacity_is_the_backends_live_nodes() -> None:
    import asyncio
    from collections.abc import Sequence

    from modelplane.core.backend import BackendNode
    from modelplane.system.jobs import BackendCapacity, node_spec

    gpu = BackendNode("gpu-a", 4000, 8192, gpu_model="A10", gpu_count=40, gpu_memory_mib=24576)
    nodes = [
        BackendNode("cpu-a", 2000, 4096, labels={"zone": "a"}, cost_per_hour=0.5),
        gpu,
        BackendNode("gone", 2000, 4096, alive=False),
        BackendNode("driver-only", 0, 4096),  # a head started with --num-cpus=0
        BackendNode("Not_A_Name!", 1000, 1024),
    ]

    class Backend:
        kind = "ray"

        async def nodes(self) -> Sequence[BackendNode]:
            return nodes

    capacity = BackendCapacity(Backend())  # type: ignore[arg-type]
    assert capacity().nodes == ()  # nothing is admitted before the first read
    spec = asyncio.run(capacity.refresh())
    assert capacity() is spec
    assert [n.name for n in spec.nodes] == ["cpu-a", "gpu-a"]
    assert spec.nodes[0].labels == {"zone": "a"}
    assert spec.nodes[0].cost_per_hour == 0.5
    converted = node_spec(gpu)
    assert converted is not None
    assert converted.gpus is not None
    assert (converted.gpus.model, converted.gpus.count) == ("A10", 16)  # the model's bound
    nodes[:] = [BackendNode("cpu-a", 2000, 4096, alive=False)]  # the head was lost
    assert asyncio.run(capacity.refresh()).nodes == ()

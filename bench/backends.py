"""Execution backends side by side: the data path to a replica, and placement at 1,500 nodes.

Single-row predictions (1 x 16 float32, an echo model) from one asyncio caller, closed loop,
at concurrency 1 and 64, against one replica of each kind:

- ``local pool (today)``: the gateway's ``WorkerPool`` (a pipe per worker, forkserver);
- ``local backend``: ``backends.local`` (a process per replica, a loopback socket, the same
  msgpack-header + raw-bytes framing);
- ``ray socket``: ``backends.ray``, an actor pinned to a node of a real two-node Ray cluster
  on this machine, batches over a direct socket to the actor with that framing;
- ``ray actor``: the same actor, one Ray actor call per batch.

Ratios are throughput against ``local backend`` and ``local pool (today)``, in this run.
Then the controller's steps for one replica over 1,500 nodes that run 1,500 replicas
(snapshot of the live nodes, admission, placement by least-allocated and by FGD), and the
time from killing a Ray node under a replica to that replica answering on another node.

Prints a table and writes ``bench/results/backends.json``.
Run: ``.venv/bin/python bench/backends.py [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))

from bench._common import ECHO_LOADER, ECHO_PATHS  # noqa: E402
from modelplane.core.backend import BackendNode, ReplicaRequest, ReplicaSpec  # noqa: E402
from modelplane.core.cluster import Demand  # noqa: E402

Predict = Callable[[dict[str, npt.NDArray[Any]]], Awaitable[Any]]
ROW = {"x": np.ones((1, 16), dtype=np.float32)}


async def closed_loop(predict: Predict, concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` callers, each sending its next row when its last answer came."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    for _ in range(50):  # warm the path
        await predict(ROW)
    end = loop.time() + seconds

    async def caller() -> None:
        while loop.time() < end:
            start = time.perf_counter()
            await predict(ROW)
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "requests": len(latencies),
    }


async def measure(predict: Predict, seconds: float) -> dict[str, dict[str, float]]:
    return {f"c={c}": await closed_loop(predict, c, seconds) for c in (1, 64)}


async def local_pool(seconds: float) -> dict[str, dict[str, float]]:
    from modelplane.dataplane.pool import PoolConfig, WorkerPool, WorkerSpec
    from modelplane.spec import FieldSpec, Signature

    signature = Signature(inputs=(FieldSpec(name="x", dtype="float32", shape=(-1, 16)),))
    pool = WorkerPool(WorkerSpec(ECHO_LOADER, paths=ECHO_PATHS), signature, PoolConfig())
    await pool.start()
    try:
        return await measure(lambda rows: pool.predict(rows, 10.0), seconds)
    finally:
        await pool.stop()


async def local_backend(seconds: float) -> dict[str, dict[str, float]]:
    from modelplane.backends.local import LocalBackend

    backend = LocalBackend(BackendNode("bench", 2000, 2048))
    spec = ReplicaSpec(ECHO_LOADER, paths=ECHO_PATHS)
    await backend.start(ReplicaRequest("echo", "bench", spec, Demand(1000, 128)), 60)
    try:
        return await measure(lambda rows: backend.predict("echo", rows, 10.0), seconds)
    finally:
        await backend.close()


async def ray_paths(seconds: float) -> dict[str, dict[str, dict[str, float]]]:
    from modelplane.backends.ray import DataPath, RayBackend

    out: dict[str, dict[str, dict[str, float]]] = {}
    spec = ReplicaSpec(ECHO_LOADER, paths=ECHO_PATHS)
    for path in (DataPath.SOCKET, DataPath.ACTOR):
        backend = RayBackend(data_path=path)
        name = f"echo-{path}"
        await backend.start(ReplicaRequest(name, "worker", spec, Demand(1000, 128)), 120)
        try:
            out[f"ray {path}"] = await measure(_caller(backend, name), seconds)
        finally:
            await backend.close()
    return out


def _caller(backend: Any, name: str) -> Predict:
    async def predict(rows: dict[str, npt.NDArray[Any]]) -> Any:
        return await backend.predict(name, rows, 10.0)

    return predict


def placement_decision(nodes: int = 1500, repeat: int = 20) -> dict[str, float]:
    """The controller's pure steps for one pending replica over ``nodes`` live nodes."""
    from modelplane.controlplane.placement import snapshot_of
    from modelplane.core.admission import AdmissionSnapshot, AdmissionState, Admitted, admit
    from modelplane.core.backend import ReplicaState, ReplicaStatus
    from modelplane.core.fragmentation import TaskDistribution
    from modelplane.core.placement import PlacementRequest, PlacementState, place
    from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy

    rng = np.random.default_rng(7)
    fleet = [
        BackendNode(f"n{i}", 64_000, 262_144, "V100M32" if i % 3 else "T4", 8 if i % 4 else 2)
        for i in range(nodes)
    ]
    spec = ReplicaSpec("m:load")
    running = []
    for i in range(nodes):  # about half the GPUs busy, in shares: a fragmented fleet
        share = int(rng.choice([250, 500, 1000]))
        demand = Demand(4000, 8192, 1, share)
        request = ReplicaRequest(f"r{i}", fleet[i].name, spec, demand)
        running.append(
            ReplicaStatus(request.name, request.node, ReplicaState.READY, request=request)
        )
    want = Demand(2000, 4096, 1, 500)
    shapes = TaskDistribution.from_demands([want, Demand(4000, 8192, 1, 1000)])
    steps: dict[str, list[float]] = {}

    def timed(label: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = step()
        steps.setdefault(label, []).append(time.perf_counter() - start)
        return value

    pending = ReplicaRequest("new", "n0", spec, want).workload()
    for _ in range(repeat):
        cluster, held = timed("snapshot of live nodes", lambda: snapshot_of(fleet, running))
        admitted = tuple(Admitted(h.workload) for h in held)
        timed(
            "admission",
            lambda held=admitted: admit(  # type: ignore[misc]
                AdmissionSnapshot((pending,), held), Policy(), 0.0, AdmissionState()
            ),
        )
        for strategy in (PlacementStrategy.LEAST_ALLOCATED, PlacementStrategy.FGD):
            config = PlacementPolicy(strategy=strategy)
            asked = PlacementRequest(cluster, pending, shapes)
            timed(
                f"place ({strategy.value})",
                lambda a=asked, c=config: place(a, c, 0.0, PlacementState()),  # type: ignore[misc]
            )
    return {f"{label} p50_ms": statistics.median(t) * 1000 for label, t in steps.items()}


async def failover(cluster: Any) -> dict[str, float]:
    """A node dies under a replica: seconds until the replica answers on another node."""
    from modelplane.backends.ray import RayBackend
    from modelplane.controlplane.placement import ReplicaPlacer
    from modelplane.core.backend import ReplicaWant
    from modelplane.spec.policy import Policy

    backend = RayBackend()
    placer = ReplicaPlacer(backend, Policy())
    spec = ReplicaSpec(ECHO_LOADER, paths=ECHO_PATHS)
    wanted = [ReplicaWant("survivor", spec, Demand(1000, 128))]
    first = (await placer.reconcile(wanted)).where()["survivor"]
    loop = asyncio.get_running_loop()
    killed = loop.time()
    cluster.kill_node(first)
    passes = 0
    try:
        while loop.time() - killed < 120:
            passes += 1
            where = (await placer.reconcile(wanted)).where().get("survivor")
            if where is not None and where != first:
                await backend.predict("survivor", ROW, 10.0)
                return {"seconds": loop.time() - killed, "passes": passes}
            await asyncio.sleep(0.2)
        raise RuntimeError("the replica never served elsewhere")
    finally:
        await backend.close()


async def data_paths(seconds: float) -> dict[str, dict[str, dict[str, float]]]:
    results = {
        "local pool (today)": await local_pool(seconds),
        "local backend": await local_backend(seconds),
    }
    results.update(await ray_paths(seconds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    from tests.kit.ray_cluster import NodeShape, ray_test_cluster

    workers = [NodeShape("worker", 2, memory_gib=2), NodeShape("spare", 2, memory_gib=2)]
    with ray_test_cluster(NodeShape("head", 0), workers) as cluster:
        results = asyncio.run(data_paths(args.seconds))
        recovered = asyncio.run(failover(cluster))
    placement = placement_decision()
    table = Table(title="single-row predictions, one replica, closed loop")
    for column in ("path", "c", "req/s", "p50 ms", "p99 ms", "x local backend", "x local pool"):
        table.add_column(column, justify="right")
    for label, by_c in results.items():
        for c, row in by_c.items():
            base = results["local backend"][c]["rps"]
            pool = results["local pool (today)"][c]["rps"]
            table.add_row(
                label,
                c,
                f"{row['rps']:.0f}",
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{row['rps'] / base:.2f}",
                f"{row['rps'] / pool:.2f}",
            )
    console = Console()
    console.print(table)
    decisions = Table(title="one replica over 1,500 nodes running 1,500 replicas")
    decisions.add_column("step")
    decisions.add_column("p50 ms", justify="right")
    for key, value in placement.items():
        decisions.add_row(key.removesuffix(" p50_ms"), f"{value:.2f}")
    console.print(decisions)
    console.print(
        f"node killed under a replica -> it answers on another node: "
        f"{recovered['seconds']:.2f} s ({recovered['passes']:.0f} controller passes)"
    )
    report = {
        "benchmark": "execution backends: data path and placement decision",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "seconds_per_point": args.seconds,
        "data_path": results,
        "placement_1500_nodes": placement,
        "node_death_to_serving_elsewhere": recovered,
    }
    out = _HERE / "results" / "backends.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()

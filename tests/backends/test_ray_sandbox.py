"""Sandboxed replicas on a real Ray cluster: the model runs in a child of its actor that
gives up what a local pool worker gives up, and the two end together.

The attacking packages and what each refusal must say are the local sandbox tests' own
(``tests/security/test_sandbox.py``): an escape that a pool worker is refused is refused the
same way here. The uid drop and the namespaces need root (CI runs as root, and so do the
Ray workers it starts).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import ray
from tests.kit import wait_for
from tests.kit.ray_cluster import NodeShape, RayTestCluster, ray_test_cluster
from tests.security.test_sandbox import (
    CAPS,
    ESCAPES,
    PROCESSES,
    REQUIRED,
    TRIGGER,
    build,
    policy_for,
    rows,
)

from modelplane.backends.ray import RayBackend
from modelplane.backends.replica_child import policy_data
from modelplane.core.backend import ReplicaRequest, ReplicaSpec, ReplicaState
from modelplane.core.cluster import Demand
from modelplane.dataplane.loader import LOADER
from modelplane.errors import WorkerFailed
from modelplane.registry.build import BuiltPackage
from modelplane.security.sandbox import NETWORK_LABEL, UID_BASE, Feature, SandboxPolicy

pytestmark = [
    pytest.mark.xdist_group("ray"),
    pytest.mark.skipif(
        not CAPS.root and os.environ.get("CI") != "true",
        reason="the uid drop and the namespaces need root (CI runs as root)",
    ),
]
T = TypeVar("T")
DEMAND = Demand(cpu_milli=500, memory_mib=300)
"""300 MiB: the child's address-space limit is this plus the policy's headroom."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    with ray_test_cluster(NodeShape("head", 0), [NodeShape("box", 4, memory_gib=4)]) as c:
        yield c


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    for leftover in Path(sys.prefix).glob("escaped-*"):
        leftover.unlink()


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 120)

    return asyncio.run(bounded())


def request(name: str, built: BuiltPackage, policy: SandboxPolicy | None = None) -> ReplicaRequest:
    spec = ReplicaSpec(
        LOADER,
        args=(str(built.path), str(built.digest)),
        sandbox=policy_data(policy or policy_for(built)),
    )
    return ReplicaRequest(name, "box", spec, DEMAND)


def gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def actor_alive(name: str) -> bool:
    from ray._private import state

    return any(
        row.get("Name") == name and row["State"] == "ALIVE" for row in state.actors().values()
    )


@pytest.mark.parametrize("attack", sorted(ESCAPES))
def test_an_escape_at_predict_is_refused_as_in_a_pool_worker(
    cluster: RayTestCluster, tmp_path: Path, attack: str
) -> None:
    built = build(tmp_path / "evil", attack, "predict")
    backend = RayBackend()
    name = f"evil-{attack.replace('_', '-')}"
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))

    async def scenario() -> tuple[str, Any]:
        await backend.start(request(name, built), 60)
        try:
            with pytest.raises(WorkerFailed) as refused:
                await backend.predict(name, rows(TRIGGER), 30)
            after = await backend.predict(name, rows(), 10)
            (status,) = await backend.replicas()
            assert status.state is ReplicaState.READY
        finally:
            await backend.close()
        return refused.value.message, after

    try:
        message, after = run(scenario())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "the model raised" in message
    assert "refusing" not in message, message
    assert re.search(ESCAPES[attack], message), message
    assert after["y"].shape == (2, 4)
    assert seen == []  # signal_gateway: this process is the gateway
    assert not list(tmp_path.glob("evil/pkg/escaped-*"))
    assert not list(Path(sys.prefix).glob("escaped-*"))


def test_an_escape_at_load_fails_the_start_and_leaves_nothing(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    built = build(tmp_path / "evil", "read_shadow", "load")
    backend = RayBackend()
    with pytest.raises(WorkerFailed) as failed:
        run(backend.start(request("evil-at-load", built), 60))
    assert "could not load its model on box" in failed.value.message
    assert "PermissionError" in failed.value.message
    assert run(backend.replicas()) == []
    wait_for(lambda: not actor_alive("evil-at-load"), 10, "the failed actor to end")


def test_the_model_process_gives_up_what_a_pool_worker_does(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    built = build(tmp_path, "probe", "predict")
    backend = RayBackend()

    async def scenario() -> tuple[Any, bytes, str]:
        status = await backend.start(request("probed", built), 60)
        try:
            assert status.pid is not None
            original = Path(f"/proc/{status.pid}/environ").read_bytes()
            return (
                await backend.predict("probed", rows(TRIGGER), 10),
                original,
                (backend.sandbox_report("probed")),
            )
        finally:
            await backend.close()

    seen, original, report = run(scenario())
    assert original.strip(b"\0") == b""  # Ray's token was in the actor's environment
    assert int(seen["uid"][0]) >= UID_BASE
    assert int(seen["no_new_privs"][0]) == 1
    assert int(seen["processes"][0]) == PROCESSES
    # the memory placement counted for the replica, not the package's declaration
    assert int(seen["address_space"][0]) == (DEMAND.memory_mib + 4096) << 20
    if Feature.SECCOMP in REQUIRED:
        assert int(seen["seccomp"][0]) == 2
    env = str(seen["env"][0]).split(",")
    assert not [k for k in env if k.startswith(("RAY_", "MODELPLANE_", "AWS_", "PG"))]
    for feature in REQUIRED:
        assert feature.value in report
    assert "missing" not in report


def test_a_required_feature_that_is_missing_fails_the_start(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    built = build(tmp_path, "none", "never")
    # network asked for and allowed: no network namespace, so requiring one cannot be met
    policy = SandboxPolicy(
        processes=PROCESSES, network=True, required=frozenset({Feature.NET_NS})
    ).for_package(built.path, labels={NETWORK_LABEL: "true"})
    with pytest.raises(WorkerFailed, match="required sandbox features unavailable: net_ns"):
        run(RayBackend().start(request("strict", built, policy), 60))


def test_killing_the_actor_ends_its_model_process(cluster: RayTestCluster, tmp_path: Path) -> None:
    built = build(tmp_path, "none", "never")
    backend = RayBackend()

    async def scenario() -> None:
        try:
            status = await backend.start(request("doomed", built), 60)
            assert not gone(status.pid)
            # killed behind the backend's back, as an operator or Ray itself might
            ray.kill(ray.get_actor("doomed", namespace="modelplane"), no_restart=True)
            await asyncio.to_thread(wait_for, lambda: gone(status.pid), 15, "the model process")
            (seen,) = await backend.replicas()
            assert seen.state is ReplicaState.DEAD

            status = await backend.start(request("stopped", built), 60)
            await backend.stop("stopped", 1.0)
            await asyncio.to_thread(wait_for, lambda: gone(status.pid), 15, "the model process")
        finally:
            await backend.close()

    run(scenario())


def test_a_model_process_that_dies_takes_its_actor_and_says_why(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    built = build(tmp_path, "none", "never")
    backend = RayBackend()

    async def scenario() -> str:
        try:
            status = await backend.start(request("fragile", built), 60)
            assert status.pid is not None
            os.kill(status.pid, signal.SIGKILL)
            deadline = asyncio.get_running_loop().time() + 15
            while (await backend.replicas())[0].state is not ReplicaState.DEAD:
                assert asyncio.get_running_loop().time() < deadline, "still alive"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(
                wait_for, lambda: not actor_alive("fragile"), 15, "the actor to end"
            )
            # once Ray has the actor dead, the reason is the one the actor left
            return (await backend.replicas())[0].reason
        finally:
            await backend.close()

    assert run(scenario()) == "its model process was killed by SIGKILL"


def test_the_docs_example_builds_a_sandboxed_replica(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "backends.md").read_text()
    section = docs.split("## Sandbox and head restarts", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/backends.md", "exec"), namespace)
    built = build(tmp_path, "none", "never")
    spec = namespace["sandboxed_spec"](str(built.path), str(built.digest))
    backend = RayBackend()

    async def scenario() -> tuple[Any, str]:
        try:
            await backend.start(ReplicaRequest("documented", "box", spec, DEMAND), 60)
            answer = await backend.predict("documented", rows(), 10)
            return answer, backend.sandbox_report("documented")
        finally:
            await backend.close()

    answer, report = run(scenario())
    assert answer["y"].shape == (2, 4)
    assert "missing" not in report
    assert "landlock" in report or Feature.LANDLOCK not in REQUIRED

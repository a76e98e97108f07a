"""A replica's own process without Ray: the policy as plain data, held to the replica's
demand, and a child that never outlives the process that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import psutil
import pytest
from tests.kit import wait_for

from modelplane.backends.replica_child import (
    ReplicaChild,
    child_policy,
    describe_exit,
    policy_data,
    policy_from_data,
)
from modelplane.core.backend import ReplicaRequest, ReplicaSpec
from modelplane.core.cluster import Demand
from modelplane.errors import WorkerFailed
from modelplane.security.sandbox import Feature, SandboxPolicy

FAKE_MODELS = str(Path(__file__).parents[1] / "dataplane")
SPEC = ReplicaSpec("fake_models:load", paths=(FAKE_MODELS,))


def test_a_policy_crosses_as_plain_values_and_comes_back_whole() -> None:
    policy = SandboxPolicy(
        memory_mb=700, read_paths=("/opt/lib",), required=frozenset({Feature.SECCOMP})
    ).for_package("/srv/pkg", memory_mb=700)
    data = policy_data(policy)
    assert json.loads(json.dumps(data)) == data  # nothing but JSON values
    assert data["required"] == ["seccomp"]
    assert policy_from_data(data) == policy


def test_a_bad_policy_names_its_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.sandbox\.memory: not a sandbox policy field"):
        policy_from_data({"memory": 5})
    with pytest.raises(ValueError, match=r"spec\.sandbox\.required: 'root' is not a valid"):
        policy_from_data({"required": ["root"]})
    with pytest.raises(ValueError, match=r"spec\.sandbox: a mapping"):
        ReplicaSpec("m:f", sandbox=["seccomp"])  # type: ignore[arg-type]


def test_the_policy_is_held_to_what_placement_counted() -> None:
    node = SandboxPolicy(read_paths=("/opt/lib",)).for_package("/srv/pkg", memory_mb=512)
    spec = ReplicaSpec("m:f", paths=("/srv/code",), sandbox=policy_data(node))
    cpu = child_policy(ReplicaRequest("r", "n", spec, Demand(500, 300)))
    assert cpu is not None
    assert (cpu.memory_mb, cpu.gpu, cpu.package_dir) == (300, False, "/srv/pkg")
    assert cpu.read_paths == ("/opt/lib", "/srv/code")
    gpu = child_policy(ReplicaRequest("r", "n", spec, Demand(500, 300, 1, 500)))
    assert gpu is not None
    assert gpu.gpu
    assert gpu.address_space_bytes is None  # CUDA reserves far more than it touches
    assert child_policy(ReplicaRequest("r", "n", SPEC, Demand(500, 300))) is None


def test_a_child_answers_then_ends_when_killed() -> None:
    import socket

    from modelplane.backends.replica_child import read_raw_frame
    from modelplane.backends.wire import Op, decode, encode

    child = ReplicaChild(SPEC, "s3cret", None, "127.0.0.1", None)
    try:
        ready = child.wait_ready(30)
        assert ready.pid == child.pid
        assert ready.sandbox == ""
        with socket.create_connection(("127.0.0.1", ready.port), timeout=10) as conn:
            conn.sendall(b"".join(encode(Op.HELLO, 0, error="s3cret")))
            assert decode(memoryview(read_raw_frame(conn))[4:]).op is Op.HELLO
            conn.sendall(b"".join(encode(Op.PREDICT, 1, {"x": np.array([[2.0]])})))
            answer = decode(memoryview(read_raw_frame(conn))[4:])
        np.testing.assert_array_equal(answer.arrays["y"], [[4.0]])
    finally:
        child.kill(grace_s=2.0)
    assert child.returncode is not None
    assert describe_exit(-signal.SIGKILL) == "its model process was killed by SIGKILL"
    assert describe_exit(3) == "its model process exited with code 3"


def test_a_model_that_fails_to_load_says_why() -> None:
    child = ReplicaChild(
        ReplicaSpec("fake_models:load_broken", paths=(FAKE_MODELS,)), "s", None, "127.0.0.1", None
    )
    try:
        with pytest.raises(WorkerFailed, match=r"could not load its model: .*no model here"):
            child.wait_ready(30)
    finally:
        child.kill()


PARENT = textwrap.dedent(
    """
    import sys
    from modelplane.backends.replica_child import ReplicaChild
    from modelplane.core.backend import ReplicaSpec

    child = ReplicaChild(ReplicaSpec("fake_models:load", paths=(sys.argv[1],)), "s", None,
                         "127.0.0.1", None)
    print(child.wait_ready(30).pid, flush=True)
    sys.stdin.readline()
    """
)


def test_a_child_does_not_outlive_its_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, FAKE_MODELS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert psutil.pid_exists(pid)
        os.kill(parent.pid, signal.SIGKILL)  # no finalizer, no atexit: as a killed actor
        parent.wait(10)
    finally:
        if parent.poll() is None:
            parent.kill()
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()

    def gone() -> bool:
        try:
            return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, 10, "the orphaned model process to end")


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="the uid drop and the namespaces need root (CI runs as root)",
)
def test_the_local_backend_sandboxes_its_replicas_too(tmp_path: Path) -> None:
    import asyncio

    from tests.security.test_sandbox import TRIGGER, build, policy_for, rows

    from modelplane.backends.local import LocalBackend
    from modelplane.core.backend import BackendNode
    from modelplane.dataplane.loader import LOADER
    from modelplane.security.sandbox import UID_BASE

    built = build(tmp_path, "read_shadow", "predict")
    spec = ReplicaSpec(
        LOADER, args=(str(built.path), str(built.digest)), sandbox=policy_data(policy_for(built))
    )
    backend = LocalBackend(BackendNode("this-machine", 2000, 2048))

    async def scenario() -> tuple[str, int]:
        try:
            status = await backend.start(
                ReplicaRequest("local", "this-machine", spec, Demand(500, 300)), 60
            )
            assert status.pid is not None
            with pytest.raises(WorkerFailed) as refused:
                await backend.predict("local", rows(TRIGGER), 10)
            return refused.value.message, psutil.Process(status.pid).uids().real
        finally:
            await backend.close()

    message, uid = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert "the model raised PermissionError" in message
    assert uid >= UID_BASE

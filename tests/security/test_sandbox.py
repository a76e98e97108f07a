"""Sandboxed workers: real worker processes running python-runtime packages that try to escape.

Each attack runs once while the package loads (the worker must be reported failed, with the
reason) and once inside ``predict`` (the request fails with the model's error, the worker
lives on); a neighbouring pool answers every request meanwhile. The uid drop, the mount and
network namespaces need root: CI runs the tests as root, elsewhere they skip without it.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from modelplane.dataplane.endpoint_runtime import EndpointConfig, ModelSource
from modelplane.dataplane.gateway import GatewayConfig
from modelplane.dataplane.loader import LOADER
from modelplane.dataplane.pool import ModelRaised, PoolConfig, WorkerPool, WorkerSpec
from modelplane.dataplane.pool.messages import Op, decode
from modelplane.dataplane.pool.worker import worker_main
from modelplane.dataplane.server import ServerThread
from modelplane.errors import WorkerFailed
from modelplane.registry.build import BuiltPackage, package
from modelplane.security.sandbox import (
    NETWORK_LABEL,
    UID_BASE,
    Feature,
    SandboxPolicy,
    apply_sandbox,
    probe,
    scrub_environment,
    seccomp_program,
)
from modelplane.spec.contract import Contract
from modelplane.spec.endpoint import Endpoint, Route

from .sandbox_models import SOURCE

T = TypeVar("T")
Arrays = dict[str, npt.NDArray[Any]]

CAPS = probe()
REQUIRED = frozenset(f for f, why in CAPS.available().items() if not why)
"""Whatever this machine can enforce must be enforced: a silent degrade fails the test."""
PROCESSES = 32
FAST = PoolConfig(start_timeout_s=30.0, backoff_base_s=0.05, backoff_max_s=0.2, stop_timeout_s=2.0)
TRIGGER = 7.0

root_only = pytest.mark.skipif(
    not CAPS.root and os.environ.get("CI") != "true",
    reason="the uid drop and the namespaces need root (CI runs as root)",
)

ESCAPES: dict[str, str] = {
    "read_shadow": r"PermissionError",
    "write_outside": r"Read-only file system|Permission denied",
    "connect_database": r"Operation not permitted|Network is unreachable",
    "fork_many": r"BlockingIOError|Resource temporarily unavailable",
    "allocate": r"Unable to allocate|MemoryError",
    "signal_parent": r"PermissionError",
    "signal_gateway": r"PermissionError",
}
"""Attack → what its failure must say (never ``refusing``: that is the model's own guard)."""

_names = itertools.count()


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout_s)

    return asyncio.run(bounded())


def build(folder: Path, attack: str, when: str, name: str = "sandboxed") -> BuiltPackage:
    """A python-runtime package whose model runs ``attack`` at ``when`` (load or predict)."""
    module_name = f"sandbox_model_{next(_names)}"
    source = folder / "src" / f"{module_name}.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        textwrap.dedent(SOURCE).format(
            builder_pid=os.getpid(), gateway_pid=os.getpid(), attack=attack, when=when
        )
    )
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # the python runtime finds a class's source through its module
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        sample = {"x": np.zeros((2, 4), dtype=np.float32)}
        return package(module.Model, name=name, output_dir=folder / "pkg",
                       runtime="python", sample_input=sample)  # fmt: skip
    finally:
        sys.modules.pop(module_name, None)


def policy_for(built: BuiltPackage, **overrides: Any) -> SandboxPolicy:
    base = SandboxPolicy(processes=PROCESSES, required=REQUIRED, **overrides)
    resources = built.manifest.resources
    return base.for_package(built.path, memory_mb=resources.memory_mb, gpus=resources.gpus)


def pool_for(built: BuiltPackage, name: str) -> WorkerPool:
    spec = WorkerSpec(LOADER, args=(str(built.path), str(built.digest)), sandbox=policy_for(built))
    return WorkerPool(spec, built.manifest.signature, FAST, name=name)


def rows(first: float = 1.0) -> Arrays:
    x = np.ones((2, 4), dtype=np.float32)
    x.flat[0] = first
    return {"x": x}


@dataclass
class Neighbour:
    """Another endpoint's pool, asked continuously while an attack runs next door."""

    pool: WorkerPool
    answered: int = 0
    failed: int = 0

    async def keep_asking(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                out = await self.pool.predict(rows(), 5.0)
                assert out["y"].shape == (2, 4)
                self.answered += 1
            except Exception:
                self.failed += 1
            await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Whatever an escaped model wrote into the Python installation goes, pass or fail."""
    yield
    for leftover in Path(sys.prefix).glob("escaped-*"):
        leftover.unlink()


@pytest.fixture
def sigterm_seen() -> Iterator[list[int]]:
    """SIGTERMs this (the gateway's) process receives; an escaped model would send one."""
    seen: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    yield seen
    signal.signal(signal.SIGTERM, previous)


def _assert_reason(message: str, attack: str) -> None:
    assert "refusing" not in message, message
    assert re.search(ESCAPES[attack], message), message


@root_only
@pytest.mark.parametrize("attack", sorted(ESCAPES))
def test_an_escape_at_load_fails_the_worker_with_the_reason(
    tmp_path: Path, attack: str, sigterm_seen: list[int]
) -> None:
    evil = pool_for(build(tmp_path / "evil", attack, "load"), "evil")
    neighbour = Neighbour(pool_for(build(tmp_path / "good", "none", "never"), "good"))

    async def scenario() -> str:
        await neighbour.pool.start()
        stop = asyncio.Event()
        asking = asyncio.create_task(neighbour.keep_asking(stop))
        try:
            with pytest.raises(WorkerFailed) as failed:
                await evil.start()
            await asyncio.sleep(0.05)  # the neighbour answers after the attack too
        finally:
            stop.set()
            await asking
            await neighbour.pool.stop()
        return failed.value.message

    message = run(scenario)
    _assert_reason(message, attack)
    assert "could not load its model" in message
    assert neighbour.answered > 0
    assert neighbour.failed == 0
    assert sigterm_seen == []
    assert not list(tmp_path.glob("evil/pkg/escaped-*"))
    assert not list(Path(sys.prefix).glob("escaped-*"))


@root_only
@pytest.mark.parametrize("attack", sorted(ESCAPES))
def test_an_escape_at_predict_fails_the_request_and_the_worker_lives_on(
    tmp_path: Path, attack: str, sigterm_seen: list[int]
) -> None:
    evil = pool_for(build(tmp_path / "evil", attack, "predict"), "evil")
    neighbour = Neighbour(pool_for(build(tmp_path / "good", "none", "never"), "good"))

    async def scenario() -> tuple[str, Arrays]:
        await asyncio.gather(neighbour.pool.start(), evil.start())
        stop = asyncio.Event()
        asking = asyncio.create_task(neighbour.keep_asking(stop))
        try:
            with pytest.raises(ModelRaised) as raised:
                await evil.predict(rows(TRIGGER), 20.0)
            after = await evil.predict(rows(), 5.0)
        finally:
            stop.set()
            await asking
            await asyncio.gather(neighbour.pool.stop(), evil.stop())
        return raised.value.message, after

    message, after = run(scenario)
    _assert_reason(message, attack)
    assert after["y"].shape == (2, 4)
    assert evil.restarts == 0
    assert neighbour.answered > 0
    assert neighbour.failed == 0
    assert sigterm_seen == []
    assert not list(Path(sys.prefix).glob("escaped-*"))


def endpoint_for(name: str, built: BuiltPackage) -> EndpointConfig:
    source = ModelSource(f"{built.manifest.name}:1", built.path, built.manifest, built.digest)
    signature = built.manifest.signature
    contract = Contract(name=name, inputs=signature.inputs, outputs=signature.outputs)
    route = Route(model=source.label)
    endpoint = Endpoint(name=name, team="test", contract=contract, routes=(route,))
    return EndpointConfig(endpoint, {source.label: source})


@root_only
@pytest.mark.timeout(120)
def test_a_gateway_sandboxes_its_workers_by_default(tmp_path: Path) -> None:
    """Through the real gateway and its default pool settings: the escape is a clear 5xx,
    the neighbouring endpoint answers."""
    endpoints = [
        endpoint_for("evil", build(tmp_path / "evil", "read_shadow", "predict", name="evil")),
        endpoint_for("good", build(tmp_path / "good", "none", "never", name="good")),
    ]
    config = GatewayConfig(pool=FAST)
    assert config.pool.sandbox is not None
    attack = {"instances": [{"x": [TRIGGER, 1.0, 1.0, 1.0]}]}
    with (
        ServerThread(endpoints, config=config) as server,
        httpx.Client(base_url=server.url, timeout=20.0) as client,
    ):
        escaped = client.post("/v1/endpoints/evil:predict", json=attack)
        answered = client.post("/v1/endpoints/good:predict", json=attack)
    assert escaped.status_code >= 500, escaped.text
    assert "PermissionError" in escaped.json()["error"]["message"]
    assert answered.status_code == 200, answered.text
    assert answered.json()["predictions"] == [[2 * TRIGGER, 2.0, 2.0, 2.0]]  # one output: bare


@root_only
def test_the_worker_sees_only_what_the_sandbox_leaves(tmp_path: Path) -> None:
    marker = Path(f"/tmp/modelplane-sandbox-marker-{os.getpid()}")
    marker.write_text("the host's /tmp")
    built = build(tmp_path, "probe", "predict")
    pool = pool_for(built, "probe")

    async def scenario() -> tuple[Arrays, bytes]:
        await pool.start()
        try:
            pid = pool.replicas()[0].pid
            # what the gateway (root) sees of the worker's original environment block
            original = Path(f"/proc/{pid}/environ").read_bytes()
            return await pool.predict(rows(TRIGGER), 10.0), original
        finally:
            await pool.stop()

    try:
        seen, original = run(scenario)
    finally:
        marker.unlink()
    assert original.strip(b"\0") == b""
    assert int(seen["uid"][0]) >= UID_BASE
    assert int(seen["no_new_privs"][0]) == 1
    assert int(seen["core"][0]) == 0
    assert int(seen["open_files"][0]) == 256
    assert int(seen["processes"][0]) == PROCESSES
    assert int(seen["address_space"][0]) == (built.manifest.resources.memory_mb + 4096) << 20
    if Feature.SECCOMP in REQUIRED:
        assert int(seen["seccomp"][0]) == 2
    env = str(seen["env"][0]).split(",")
    assert set(env) >= {"HOME", "TMPDIR", "PATH"}
    assert not [k for k in env if k.startswith(("MODELPLANE_", "AWS_", "PG", "REDIS"))]
    assert marker.name not in str(seen["tmp_files"][0]).split(",")


@root_only
def test_the_ready_message_carries_the_sandbox_report(tmp_path: Path) -> None:
    import multiprocessing

    built = build(tmp_path, "none", "never")
    spec = WorkerSpec(LOADER, args=(str(built.path), str(built.digest)), sandbox=policy_for(built))
    context = multiprocessing.get_context("spawn")
    inbox_r, inbox_w = context.Pipe(duplex=False)
    outbox_r, outbox_w = context.Pipe(duplex=False)
    process = context.Process(target=worker_main, args=(spec, inbox_r, outbox_w), daemon=True)
    process.start()
    try:
        assert outbox_r.poll(60.0), "the worker sent no READY"
        hello = decode(outbox_r.recv_bytes())
    finally:
        inbox_w.close()  # end of file: the worker stops
        process.join(10.0)
        if process.exitcode is None:
            process.kill()
    assert hello.op is Op.READY
    assert not hello.error
    for feature in REQUIRED:
        assert feature.value in hello.sandbox
    assert "missing" not in hello.sandbox


@root_only
def test_a_required_feature_that_is_missing_fails_the_worker(tmp_path: Path) -> None:
    built = build(tmp_path, "none", "never")
    # network asked for and allowed: no network namespace, so requiring one cannot be met
    policy = SandboxPolicy(
        processes=PROCESSES, network=True, required=frozenset({Feature.NET_NS})
    ).for_package(built.path, labels={NETWORK_LABEL: "true"})
    spec = WorkerSpec(LOADER, args=(str(built.path), str(built.digest)), sandbox=policy)
    pool = WorkerPool(spec, built.manifest.signature, FAST, name="strict")
    with pytest.raises(WorkerFailed, match="required sandbox features unavailable: net_ns"):
        run(pool.start)


@root_only
def test_an_unprivileged_server_still_gets_landlock_and_seccomp(tmp_path: Path) -> None:
    """What a worker keeps when the server is not root: the child drops to ``nobody``
    itself, then sandboxes; files outside and TCP must still be out of reach."""
    if Feature.LANDLOCK not in REQUIRED or Feature.SECCOMP not in REQUIRED:
        pytest.skip("this kernel has no Landlock or no seccomp filter")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for the model")
    outside.chmod(0o644)
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            report = apply_sandbox(SandboxPolicy(package_dir=str(tmp_path / "pkg")))
            outcome = {"summary": report.summary(), "tmp": report.tmp_dir}
            for name, attempt in (
                ("read", outside.read_text),
                ("tcp", lambda: socket.create_connection(("127.0.0.1", 5432), timeout=2)),
                ("tmp", lambda: Path(report.tmp_dir, "ok").write_text("ok")),
            ):
                try:
                    attempt()
                    outcome[name] = "ok"
                except OSError as exc:
                    outcome[name] = type(exc).__name__
            os.write(write_end, json.dumps(outcome).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        outcome = json.loads(reader.read() or "{}")
    _, status = os.waitpid(pid, 0)
    assert status == 0, outcome
    shutil.rmtree(outcome["tmp"], ignore_errors=True)  # os._exit ran no finalizer
    assert outcome["read"] == "PermissionError"
    assert outcome["tcp"] == "PermissionError"
    assert outcome["tmp"] == "ok"
    assert "missing: mount_ns" in outcome["summary"]
    assert "uid (the server does not run as root)" in outcome["summary"]


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _without_sys_admin() -> None:
    """Become root as a default container has it: no CAP_SYS_ADMIN, so no namespaces."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0
    data[0].effective &= ~(1 << 21)
    data[0].permitted &= ~(1 << 21)
    assert libc.capset(ctypes.byref(header), data) == 0


@root_only
def test_root_without_namespaces_keeps_uid_0_but_no_capabilities(tmp_path: Path) -> None:
    """Where the Python installation sits behind a closed folder (``/root`` here) and no mount
    namespace can reopen it, another uid could not even import: the worker stays uid 0, says
    why, and loses every capability instead; Landlock and seccomp still hold."""
    if Feature.LANDLOCK not in REQUIRED or Feature.SECCOMP not in REQUIRED:
        pytest.skip("this kernel has no Landlock or no seccomp filter")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            _without_sys_admin()
            report = apply_sandbox(SandboxPolicy(package_dir=str(tmp_path)))
            lines = Path("/proc/self/status").read_text().splitlines()
            outcome = {
                "summary": report.summary(),
                "tmp": report.tmp_dir,
                "caps": [ln for ln in lines if ln.startswith(("CapEff", "CapBnd"))],
            }
            for name, attempt in (
                ("shadow", Path("/etc/shadow").read_text),
                ("tcp", lambda: socket.create_connection(("127.0.0.1", 5432), timeout=2)),
            ):
                try:
                    attempt()
                    outcome[name] = "ok"
                except OSError as exc:
                    outcome[name] = type(exc).__name__
            os.write(write_end, json.dumps(outcome).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        outcome = json.loads(reader.read() or "{}")
    _, status = os.waitpid(pid, 0)
    assert status == 0, outcome
    shutil.rmtree(outcome["tmp"], ignore_errors=True)  # os._exit ran no finalizer
    assert outcome["shadow"] == "PermissionError"
    assert outcome["tcp"] == "PermissionError"
    assert sorted(outcome["caps"]) == ["CapBnd:\t0000000000000000", "CapEff:\t0000000000000000"]
    summary = outcome["summary"]
    assert "capabilities" in summary.partition(";")[0]
    assert "mount_ns (no CAP_SYS_ADMIN" in summary
    if _closed_on_the_way(sys.base_prefix):
        assert "is closed to other users" in summary


def _closed_on_the_way(path: str) -> bool:
    """A folder above ``path`` that others may not cross."""
    parts = Path(path).parts
    return any(
        not os.stat(os.path.join(*parts[:depth])).st_mode & 0o001 for depth in range(2, len(parts))
    )


# ---------------------------------------------------------------------------- pure parts


def test_the_environment_keeps_what_runtimes_need_and_nothing_secret() -> None:
    environ = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MODELPLANE_DATABASE_URL": "postgresql://u:p@db/mp",
        "MODELPLANE_HOME": "/root/.modelplane",
        "GITHUB_TOKEN": "t",
        "API_KEY": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "GOOGLE_APPLICATION_CREDENTIALS": "/creds.json",
        "AZURE_CLIENT_SECRET": "s",
        "PGPASSWORD": "p",
        "REDIS_URL": "redis://x",
        "OMP_AUTH_TOKEN": "looks like a setting, is a secret",
        "HOME": "/root",
    }
    kept = scrub_environment(environ, "/tmp")
    assert kept == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "TMP": "/tmp",
        "TEMP": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def test_a_package_gets_network_only_when_it_asks_and_the_node_allows() -> None:
    labels = {NETWORK_LABEL: "true"}
    assert not SandboxPolicy().for_package("/p", labels=labels).network
    assert not SandboxPolicy(network=True).for_package("/p").network
    assert SandboxPolicy(network=True).for_package("/p", labels=labels).network


def test_address_space_is_the_declared_memory_plus_headroom() -> None:
    policy = SandboxPolicy().for_package("/p", memory_mb=1024)
    assert policy.address_space_bytes == (1024 + 4096) << 20
    assert SandboxPolicy().for_package("/p", memory_mb=1024, gpus=1).address_space_bytes is None


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_seccomp_program_checks_the_arch_and_ends_allowing(arch: str) -> None:
    program = seccomp_program(arch, network=False)
    assert program[0] == (0x20, 0, 0, 4)  # load the arch first
    assert program[-1] == (0x06, 0, 0, 0x7FFF0000)
    for i, (code, jt, jf, _k) in enumerate(program):
        assert code in (0x20, 0x15, 0x35, 0x06)
        if code != 0x06:  # every jump lands inside the program
            assert i + 1 + max(jt, jf) < len(program)
    assert len(seccomp_program(arch, network=True)) < len(program)


def test_the_node_says_what_sandbox_it_offers() -> None:
    from modelplane.controlplane.nodes import detect_local_node

    labels = detect_local_node().labels
    assert labels["modelplane.io/sandbox"] == CAPS.label()
    missing = [f.value for f, why in CAPS.available().items() if why]
    assert labels.get("modelplane.io/sandbox-missing", "") == "-".join(
        m.replace("_", "") for m in missing
    )

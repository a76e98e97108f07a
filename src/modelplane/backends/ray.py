"""The Ray backend: an actor per replica, pinned to the node modelplane's placement chose.

Each replica is one actor, created with a hard ``NodeAffinitySchedulingStrategy`` on the
chosen node and asking Ray for the resources placement counted (``core.backend.ray_resources``:
fractional CPU and GPU, memory, the GPU model as ``accelerator_type:<MODEL>``). Ray never
moves it: when the node cannot take it the actor stays pending and the start fails after its
timeout, leaving placement to decide again. A replica's state is read back from Ray's actor
table (the GCS: ``ray.util.state`` would need the dashboard, which modelplane's clusters run
without), so a node that died shows its replicas dead with Ray's reason.

Batches travel one of two ways (``DataPath``): a direct TCP connection per replica with the
data plane's framing (the default: measured faster, ``bench/backends.py``), or one Ray actor
call per batch. Either way no pickled object from a replica is trusted on the socket path;
the actor-call path is Ray's own serialization.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from modelplane.backends.ray_nodes import exposure_findings, nodes_from_ray
from modelplane.backends.replica_host import ReplicaHost
from modelplane.backends.wire import Op, SocketChannel, decode, encode
from modelplane.core.backend import (
    Arrays,
    BackendNode,
    ReplicaRequest,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    ray_resources,
)
from modelplane.errors import DeadlineExceeded, ModelplaneError, NotFound, WorkerFailed

__all__ = ["NAMESPACE", "DataPath", "RayBackend", "ReplicaActor", "replicas_by_node"]

NAMESPACE = "modelplane"
_log = logging.getLogger("modelplane.backends.ray")


class DataPath(StrEnum):
    SOCKET = "socket"
    """A TCP connection per replica, the data plane's framing (msgpack header + raw bytes)."""
    ACTOR = "actor"
    """One Ray actor call per batch (the frame's bytes as the argument and the answer)."""


class ReplicaActor:
    """What runs inside the actor: a replica host listening on its node's address."""

    def __init__(self, spec: ReplicaSpec, secret: str, warmup: Arrays | None) -> None:
        self._host = ReplicaHost(spec, secret, warmup)
        self._address: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self._port = self._host.listen(self._address)

    def ready(self) -> tuple[int, str, int]:
        return os.getpid(), self._address, self._port

    def predict(self, frame: bytes) -> bytes:
        return self._host.answer_bytes(frame)

    def ping(self) -> int:
        return os.getpid()


# Typed as Any: Ray's stubs do not describe an actor class's ``.options``/``.remote``.
_RemoteActor: Any = ray.remote(max_restarts=0, max_task_retries=0)(ReplicaActor)


@dataclass(slots=True)
class _Replica:
    request: ReplicaRequest
    handle: Any
    node_id: str
    pid: int | None = None
    channel: SocketChannel | None = None
    stopped: bool = False


class RayBackend:
    """Replicas as pinned actors on the Ray cluster this process is connected to."""

    def __init__(
        self, *, data_path: DataPath = DataPath.SOCKET, namespace: str = NAMESPACE
    ) -> None:
        if not ray.is_initialized():
            raise WorkerFailed("not connected to Ray: use RayBackend.connect(address)")
        self._data_path = data_path
        self._namespace = namespace
        self._replicas: dict[str, _Replica] = {}
        self._owns_connection = False

    @classmethod
    def connect(
        cls, address: str, *, data_path: DataPath = DataPath.SOCKET, namespace: str = NAMESPACE
    ) -> RayBackend:
        """Join the cluster at ``address`` (its token from ``RAY_AUTH_TOKEN`` when it has one)."""
        try:
            ray.init(
                address=address,
                namespace=namespace,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise WorkerFailed(f"cannot join the Ray cluster at {address}: {exc}") from exc
        backend = cls(data_path=data_path, namespace=namespace)
        backend._owns_connection = True
        return backend

    @property
    def kind(self) -> str:
        return "ray"

    async def nodes(self) -> Sequence[BackendNode]:
        return nodes_from_ray(await asyncio.to_thread(ray.nodes))

    async def start(self, request: ReplicaRequest, timeout_s: float) -> ReplicaStatus:
        if request.name in self._replicas and not self._replicas[request.name].stopped:
            raise WorkerFailed(f"replica {request.name} is already running")
        nodes = {n.name: n for n in await self.nodes()}
        node = nodes.get(request.node)
        if node is None or not node.alive:
            raise WorkerFailed(f"replica {request.name}: node {request.node} is not alive in Ray")
        resources = ray_resources(request.demand, node.gpu_model)
        secret = secrets.token_urlsafe(32)
        handle = _RemoteActor.options(
            name=request.name,
            namespace=self._namespace,
            num_cpus=resources.pop("CPU", 0.0),
            num_gpus=resources.pop("GPU", 0.0),
            memory=resources.pop("memory", None),
            resources=resources,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.engine_id, soft=False),
        ).remote(request.spec, secret, request.warmup)
        replica = _Replica(request, handle, node.engine_id)
        self._replicas[request.name] = replica
        try:
            ready: Any = handle.ready
            pid, host, port = await asyncio.wait_for(ready.remote(), timeout_s)
            replica.pid = pid
            if self._data_path is DataPath.SOCKET:
                replica.channel = await SocketChannel.connect(host, port, secret, timeout_s)
        except BaseException as exc:
            await self.stop(request.name, 0.0)
            if isinstance(exc, TimeoutError):
                raise WorkerFailed(
                    f"replica {request.name} did not start on {request.node} in {timeout_s:g}s "
                    "(the node lacks the resources, or the model is slow to load)"
                ) from None
            if isinstance(exc, ray.exceptions.RayError):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise WorkerFailed(
                    f"replica {request.name} did not start on {request.node}: {first}"
                ) from exc
            raise
        return ReplicaStatus(
            request.name, request.node, ReplicaState.READY, pid=pid, request=request
        )

    async def stop(self, name: str, grace_s: float) -> None:
        replica = self._replicas.pop(name, None)
        if replica is None or replica.stopped:
            return
        replica.stopped = True
        if replica.channel is not None:
            await replica.channel.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(ray.kill, replica.handle, no_restart=True)

    async def replicas(self) -> Sequence[ReplicaStatus]:
        table, nodes = await asyncio.to_thread(_actor_table), await self.nodes()
        names = {n.engine_id: n.name for n in nodes}
        out: list[ReplicaStatus] = []
        for name, replica in self._replicas.items():
            row = table.get(name)
            state, reason = _state(row, replica)
            node_name = names.get(replica.node_id, replica.request.node)
            out.append(ReplicaStatus(name, node_name, state, reason, replica.pid, replica.request))
        return out

    async def ping(self, name: str, timeout_s: float) -> bool:
        replica = self._live(name)
        try:
            if replica.channel is not None:
                await replica.channel.call(Op.PING, None, timeout_s)
            else:
                await asyncio.wait_for(replica.handle.ping.remote(), timeout_s)
        except (ModelplaneError, TimeoutError, ray.exceptions.RayError):
            return False
        return True

    async def predict(self, name: str, arrays: Arrays, timeout_s: float) -> Arrays:
        replica = self._live(name)
        if replica.channel is not None:
            frame = await replica.channel.call(Op.PREDICT, arrays, timeout_s)
        else:
            payload = b"".join(encode(Op.PREDICT, 0, arrays))
            try:
                answer = await asyncio.wait_for(replica.handle.predict.remote(payload), timeout_s)
            except TimeoutError:
                raise DeadlineExceeded(f"{name} gave no answer within {timeout_s:.3g}s") from None
            except ray.exceptions.RayActorError as exc:
                raise WorkerFailed(f"replica {name} died: {exc}") from exc
            frame = decode(memoryview(answer)[4:])
        if frame.op is Op.ERROR:
            raise WorkerFailed(f"the model raised {frame.error_type}: {frame.error}")
        return frame.arrays

    def _live(self, name: str) -> _Replica:
        replica = self._replicas.get(name)
        if replica is None or replica.stopped:
            raise NotFound(f"no running replica {name}")
        return replica

    async def close(self) -> None:
        for name in list(self._replicas):
            await self.stop(name, 0.0)
        self._replicas.clear()
        if self._owns_connection:
            await asyncio.to_thread(ray.shutdown)

    def exposure(self) -> Sequence[str]:
        """What makes the joined cluster reachable by strangers (see ``ray_nodes``)."""
        return exposure_findings(_dashboard_address(), _token_auth(), _gcs_address())

    def placed(self, name: str) -> ReplicaRequest:
        """What ``name`` was started with."""
        return self._live(name).request


def _state(row: dict[str, Any] | None, replica: _Replica) -> tuple[ReplicaState, str]:
    if replica.stopped:
        return ReplicaState.STOPPED, "stopped"
    if row is None:
        return ReplicaState.STARTING, "not in Ray's actor table yet"
    ray_state = str(row.get("State", ""))
    if ray_state == "DEAD":
        return ReplicaState.DEAD, _death_reason(row)
    if ray_state == "ALIVE":
        broken = replica.channel is not None and replica.channel.closed
        if broken:
            return ReplicaState.DEAD, "its connection broke"
        return (ReplicaState.READY, "") if replica.pid else (ReplicaState.STARTING, "loading")
    return ReplicaState.STARTING, ray_state.lower()


def _death_reason(row: dict[str, Any]) -> str:
    cause = str(row.get("DeathCause") or "")
    for line in cause.splitlines():
        if "error_message" in line:
            return line.split(":", 1)[1].strip().strip('"')
    return "the actor died"


def _actor_table() -> dict[str, dict[str, Any]]:
    """Our namespace's actors by name, the newest of each name (a name is reused on restart)."""
    from ray._private import state  # the GCS actor table; the public state API needs the dashboard

    out: dict[str, dict[str, Any]] = {}
    for row in state.actors().values():
        if row.get("RayNamespace") not in (None, NAMESPACE):
            continue
        name = str(row.get("Name") or "")
        if name and (name not in out or out[name].get("State") == "DEAD"):
            out[name] = row
    return out


def replicas_by_node() -> dict[str, int]:
    """Live modelplane replicas per node name, whoever started them, from Ray's actor table."""
    names = {n.engine_id: n.name for n in nodes_from_ray(ray.nodes())}  # type: ignore[no-untyped-call]
    out: dict[str, int] = {}
    for row in _actor_table().values():
        if row.get("State") == "ALIVE":
            node = names.get(str((row.get("Address") or {}).get("NodeID", "")), "?")
            out[node] = out.get(node, 0) + 1
    return out


def _dashboard_address() -> str | None:
    from ray.experimental import internal_kv

    value = internal_kv._internal_kv_get("dashboard", namespace=b"dashboard")
    return value.decode() if isinstance(value, bytes) else None


def _token_auth() -> bool:
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return bool(is_token_auth_enabled())


def _gcs_address() -> str:
    context = ray.get_runtime_context()
    return str(context.gcs_address)

"""The Ray backend: an actor per replica, pinned to the node modelplane's placement chose.

Each replica is one actor, created with a hard ``NodeAffinitySchedulingStrategy`` on the
chosen node and asking Ray for the resources placement counted (``core.backend.ray_resources``:
fractional CPU and GPU, memory, the GPU model as ``accelerator_type:<MODEL>``). Ray never
moves it: when the node cannot take it the actor stays pending and the start fails after its
timeout, leaving placement to decide again. A replica's state is read back from Ray's actor
table (the GCS: ``ray.util.state`` would need the dashboard, which modelplane's clusters run
without), so a node that died shows its replicas dead with Ray's reason.

The model itself runs in a child process of the actor (``backends.replica_child``), which
enters the sandbox the spec carries, as a local pool worker does; a Ray worker cannot (it
must talk to its raylet and write Ray's session files). The child ends with the actor, and
the actor with the child, so Ray's actor table tells the truth about the model.

Batches travel one of two ways (``DataPath``): a direct TCP connection per replica to the
child, with the data plane's framing (the default: measured faster, ``bench/backends.py``),
or one Ray actor call per batch, relayed by the actor over its own connection to the child.
Either way no pickled object from a replica is trusted on the socket path; the actor-call
path is Ray's own serialization.

Every call to the head is bounded (``backends.ray_link``). A backend that joined the cluster
itself (``RayBackend.connect``) joins it again after the head restarts; the replicas it held
are reported dead with the reason "the Ray head restarted" (actors do not outlive their head
without GCS fault tolerance), so the placement controller places them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from modelplane.backends.packages import ensure_package
from modelplane.backends.ray_link import HeadLink, HeadUnreachable, LinkSettings, reset_auth_cache
from modelplane.backends.ray_nodes import exposure_findings, nodes_from_ray
from modelplane.backends.replica_child import ChildReady, ReplicaChild, child_policy, read_raw_frame
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
from modelplane.errors import DeadlineExceeded, ModelplaneError, NotFound, ReplicaLost, WorkerFailed
from modelplane.security.sandbox import SandboxPolicy

__all__ = [
    "HEAD_RESTARTED",
    "NAMESPACE",
    "DataPath",
    "LinkSettings",
    "PlacedReplica",
    "RayBackend",
    "ReplicaActor",
    "placed_replicas",
    "replicas_by_node",
]

NAMESPACE = "modelplane"
HEAD_RESTARTED = "the Ray head restarted"
"""Why every replica held when the head went away is dead."""
_EXIT_KV = b"modelplane-replica-exit"
"""Ray internal KV namespace where an actor leaves why its model process ended."""
_PLACED_KV = b"modelplane-replica"
"""Ray internal KV namespace where a backend leaves what each replica serves."""
_log = logging.getLogger("modelplane.backends.ray")


class DataPath(StrEnum):
    SOCKET = "socket"
    """A TCP connection per replica, the data plane's framing (msgpack header + raw bytes)."""
    ACTOR = "actor"
    """One Ray actor call per batch (the frame's bytes as the argument and the answer)."""


class ReplicaActor:
    """What runs inside the actor: the replica's own process, watched, and a relay to it.

    The model runs in a child process (``backends.replica_child``) that enters the sandbox
    the spec carries and answers on a socket of this node's address; callers on the socket
    path connect to it directly. The actor-call path relays each frame over a connection of
    its own to that socket. When the child ends unasked, the actor records why (Ray's
    internal KV, read back by ``RayBackend.replicas``) and ends too, so Ray reports the
    replica dead; when the actor ends, however it ends, the child ends with it.
    """

    def __init__(
        self,
        name: str,
        spec: ReplicaSpec,
        secret: str,
        warmup: Arrays | None,
        policy: SandboxPolicy | None,
    ) -> None:
        self._name = name
        self._secret = secret
        if spec.package is not None:
            # before the model process starts: its sandbox allows no network and no writes
            ensure_package(*spec.package)
        self._address: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self._ready: ChildReady | None = None
        self._relay: socket.socket | None = None
        self._lock = threading.Lock()
        self._child = ReplicaChild(
            spec, secret, warmup, self._address, policy, on_exit=self._child_ended
        )

    def ready(self, timeout_s: float) -> tuple[str, int, str, int, str]:
        """``("ready", pid, address, port, sandbox)`` or ``("error", 0, reason, 0, "")``."""
        if self._ready is None:
            try:
                self._ready = self._child.wait_ready(timeout_s)
            except WorkerFailed as exc:
                self._child.kill()
                return ("error", 0, exc.message, 0, "")
        ready = self._ready
        return ("ready", ready.pid, self._address, ready.port, ready.sandbox)

    def connection(self) -> tuple[str, int, str] | None:
        """``(address, port, secret)`` of the model's process, for a gateway that did not start
        this replica (``up --gateways N``); ``None`` until it is ready.

        The secret keeps the socket closed to whoever reaches the node's address. A caller of
        this method holds the cluster's token, and with it can already run any code on the
        cluster (this actor's included), so handing the secret out here opens nothing new.
        """
        if self._ready is None:
            return None
        return (self._address, self._ready.port, self._secret)

    def predict(self, frame: bytes) -> bytes:
        return self._call(frame)

    def ping(self) -> int:
        reply = decode(memoryview(self._call(b"".join(encode(Op.PING, 0))))[4:])
        return reply.pid

    def usage(self) -> tuple[int, float, float, float | None] | None:
        """``(pid, cpu_seconds, rss_mib, age_s)`` of the model's process, read on this node
        by the process that owns it; ``None`` until it is ready or once it is gone."""
        if self._ready is None:
            return None
        found = self._child.usage()
        if found is None:
            return None
        return self._ready.pid, found.cpu_seconds, found.rss_mib, found.age_s

    def _call(self, frame: bytes) -> bytes:
        # One call at a time per actor (Ray's default): one connection, one frame each way.
        with self._lock:
            if self._relay is None:
                self._relay = self._connect()
            try:
                self._relay.sendall(frame)
                return read_raw_frame(self._relay)
            except (OSError, EOFError, ValueError) as exc:
                self._relay.close()
                self._relay = None
                why = f"replica {self._name}: its process did not answer: {exc}"
                raise WorkerFailed(why) from exc

    def _connect(self) -> socket.socket:
        if self._ready is None:
            raise WorkerFailed(f"replica {self._name} is not ready")
        conn = socket.create_connection((self._address, self._ready.port), timeout=10.0)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"".join(encode(Op.HELLO, 0, error=self._secret)))
        if decode(memoryview(read_raw_frame(conn))[4:]).op is not Op.HELLO:
            conn.close()
            raise WorkerFailed(f"replica {self._name} refused the relay")
        conn.settimeout(None)
        return conn

    def _child_ended(self, why: str) -> None:
        if self._ready is None:
            return  # it failed to load: ``ready`` says why, and the backend stops this actor
        _put_exit_reason(self._name, why)
        # Ray reports the actor dead, and the backend the replica, with the reason just kept.
        os._exit(1)


# Typed as Any: Ray's stubs do not describe an actor class's ``.options``/``.remote``.
_RemoteActor: Any = ray.remote(max_restarts=0, max_task_retries=0)(ReplicaActor)


def _put_exit_reason(name: str, why: str) -> None:
    from ray.experimental import internal_kv

    with contextlib.suppress(Exception):  # the head may be gone too: Ray's reason stands
        internal_kv._internal_kv_put(name.encode(), why.encode(), namespace=_EXIT_KV)


@dataclass(slots=True)
class _Replica:
    request: ReplicaRequest
    handle: Any
    node_id: str
    pid: int | None = None
    channel: SocketChannel | None = None
    stopped: bool = False
    sandbox: str = ""
    lost: str = ""
    """Why it is dead although Ray never said so (its head went away)."""
    exit_reason: str = ""


class RayBackend:
    """Replicas as pinned actors on the Ray cluster this process is connected to."""

    def __init__(
        self,
        *,
        data_path: DataPath = DataPath.SOCKET,
        namespace: str = NAMESPACE,
        link: LinkSettings | None = None,
        owner: str = "",
    ) -> None:
        if not ray.is_initialized():
            raise WorkerFailed("not connected to Ray: use RayBackend.connect(address)")
        self._data_path = data_path
        self._namespace = namespace
        self.owner = owner
        """Whose replicas these are (one deployment's id): ``placed_for`` lists only those
        with the same owner, so two deployments on one cluster never share replicas."""
        self._replicas: dict[str, _Replica] = {}
        self._owns_connection = False
        self._last_nodes: Sequence[BackendNode] = ()
        self._link = HeadLink(
            str(ray.get_runtime_context().gcs_address),
            join=None,
            on_lost=self._head_lost,
            settings=link,
        )

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        data_path: DataPath = DataPath.SOCKET,
        namespace: str = NAMESPACE,
        link: LinkSettings | None = None,
        owner: str = "",
    ) -> RayBackend:
        """Join the cluster at ``address`` (its token from ``RAY_AUTH_TOKEN`` when it has one).

        A backend made here joins ``address`` again when its head restarts.
        """
        _check_listening(address)
        join = functools.partial(_join, address, namespace)
        try:
            join()
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise WorkerFailed(f"cannot join the Ray cluster at {address}: {exc}") from exc
        backend = cls(data_path=data_path, namespace=namespace, link=link, owner=owner)
        backend._owns_connection = True
        backend._link = HeadLink(
            str(ray.get_runtime_context().gcs_address),
            join=join,
            on_lost=backend._head_lost,
            settings=link,
        )
        return backend

    @property
    def kind(self) -> str:
        return "ray"

    @property
    def head_up(self) -> bool:
        """Whether the head answered the last call (False until it is joined again)."""
        return self._link.up

    def _head_lost(self, why: str) -> None:
        for replica in self._replicas.values():
            replica.lost = replica.lost or HEAD_RESTARTED
            # a handle of the old cluster must not reach the new one
            replica.handle = None

    async def nodes(self) -> Sequence[BackendNode]:
        try:
            rows = await self._link.call(_node_rows, self._link.settings.call_timeout_s)
        except HeadUnreachable:
            return [dataclasses.replace(n, alive=False) for n in self._last_nodes]
        self._last_nodes = nodes_from_ray(rows)
        return self._last_nodes

    async def start(self, request: ReplicaRequest, timeout_s: float) -> ReplicaStatus:
        if request.name in self._replicas and not self._replicas[request.name].stopped:
            raise WorkerFailed(f"replica {request.name} is already running")
        try:
            policy = child_policy(request)
        except (TypeError, ValueError) as exc:
            raise WorkerFailed(f"replica {request.name}: {exc}") from None
        nodes = {n.name: n for n in await self.nodes()}
        self._link.check_up()
        node = nodes.get(request.node)
        if node is None or not node.alive:
            raise WorkerFailed(f"replica {request.name}: node {request.node} is not alive in Ray")
        resources = ray_resources(request.demand, node.gpu_model)
        secret = secrets.token_urlsafe(32)
        timeout = self._link.settings.call_timeout_s
        await self._link.call(_del_exit_reason, request.name, timeout)
        await self._link.call(_put_placed, request, self.owner, timeout)
        options = _RemoteActor.options(
            name=request.name,
            namespace=self._namespace,
            num_cpus=resources.pop("CPU", 0.0),
            num_gpus=resources.pop("GPU", 0.0),
            memory=resources.pop("memory", None),
            resources=resources,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.engine_id, soft=False),
        )
        handle = await self._link.call(
            options.remote, request.name, request.spec, secret, request.warmup, policy
        )
        replica = _Replica(request, handle, node.engine_id)
        self._replicas[request.name] = replica
        try:
            ready: Any = handle.ready
            answer = await asyncio.wait_for(ready.remote(timeout_s), timeout_s)
            if answer[0] != "ready":
                raise WorkerFailed(
                    f"replica {request.name} could not load its model on {request.node}: "
                    f"{answer[2]}"
                )
            _, pid, host, port, replica.sandbox = answer
            replica.pid = pid
            if "missing:" in replica.sandbox:
                _log.warning("replica %s pid %d %s", request.name, pid, replica.sandbox)
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
        if replica.handle is None:
            return  # lost with its head: nothing of it is left to stop
        # killing the actor ends its model process with it (``ReplicaActor``)
        with contextlib.suppress(ModelplaneError, ValueError):
            await self._link.call(ray.kill, replica.handle, no_restart=True)
        with contextlib.suppress(ModelplaneError):
            await self._link.call(_del_exit_reason, name, self._link.settings.call_timeout_s)
            await self._link.call(_del_placed, name, self._link.settings.call_timeout_s)

    async def replicas(self) -> Sequence[ReplicaStatus]:
        table: dict[str, dict[str, Any]] = {}
        if any(not r.lost for r in self._replicas.values()):
            with contextlib.suppress(HeadUnreachable):
                table = await self._link.wait(self._actor_table)
        nodes = await self.nodes() if self._link.up else self._last_nodes
        names = {n.engine_id: n.name for n in nodes}
        out: list[ReplicaStatus] = []
        for name, replica in list(self._replicas.items()):
            state, reason = _state(table.get(name), replica)
            if state is ReplicaState.DEAD and not replica.lost and self._link.up:
                reason = await self._exit_reason(replica) or reason
            node_name = names.get(replica.node_id, replica.request.node)
            out.append(ReplicaStatus(name, node_name, state, reason, replica.pid, replica.request))
        return out

    async def _actor_table(self) -> dict[str, dict[str, Any]]:
        client = _gcs_client()
        infos = await client.async_get_all_actor_info(timeout=self._link.settings.call_timeout_s)
        return _newest_by_name((_actor_row(info) for info in infos.values()), self._namespace)

    async def _exit_reason(self, replica: _Replica) -> str:
        """Why the actor's model process ended, as the actor left it (once read, kept)."""
        if not replica.exit_reason:
            with contextlib.suppress(ModelplaneError):
                found = await self._link.call(
                    _get_exit_reason, replica.request.name, self._link.settings.call_timeout_s
                )
                replica.exit_reason = found.decode() if found else ""
        return replica.exit_reason

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
                raise ReplicaLost(f"replica {name} died: {exc}") from exc
            except ray.exceptions.RayTaskError as exc:
                raise ReplicaLost(f"replica {name}: {exc.cause}") from exc
            frame = decode(memoryview(answer)[4:])
        if frame.op is Op.ERROR:
            raise WorkerFailed(f"the model raised {frame.error_type}: {frame.error}")
        return frame.arrays

    def _live(self, name: str) -> _Replica:
        replica = self._replicas.get(name)
        if replica is None or replica.stopped:
            raise NotFound(f"no running replica {name}")
        if replica.lost or (replica.handle is None and replica.channel is None):
            raise ReplicaLost(f"replica {name} was lost: {replica.lost or 'gone'}")
        return replica

    async def usage(
        self, names: Sequence[str], timeout_s: float
    ) -> dict[str, tuple[int, float, float, float | None]]:
        """``(pid, cpu_seconds, rss_mib, age_s)`` of each replica's model process, read by its actor
        on its node (``ReplicaActor.usage``); replicas that do not answer within
        ``timeout_s`` (an actor busy relaying a batch, a node gone) are left out."""
        asks: dict[str, asyncio.Future[Any]] = {}
        for name in names:
            replica = self._replicas.get(name)
            if replica is None or replica.stopped or replica.lost or replica.handle is None:
                continue
            with contextlib.suppress(ray.exceptions.RayError, ValueError):
                asks[name] = asyncio.ensure_future(_awaited(replica.handle.usage.remote()))
        if not asks:
            return {}
        done, pending = await asyncio.wait(asks.values(), timeout=timeout_s)
        for late in pending:
            late.cancel()
        out: dict[str, tuple[int, float, float, float | None]] = {}
        for name, ask in asks.items():
            if ask not in done or ask.cancelled() or ask.exception() is not None:
                continue
            found = ask.result()
            if found is not None:
                pid, cpu_seconds, rss_mib, age_s = found
                age = None if age_s is None else float(age_s)
                out[name] = (int(pid), float(cpu_seconds), float(rss_mib), age)
        return out

    def sandbox_report(self, name: str) -> str:
        """What the replica's model process gave up (the sandbox's one line; empty: none)."""
        return self._live(name).sandbox

    async def close(self) -> None:
        for name in list(self._replicas):
            await self.stop(name, 0.0)
        self._replicas.clear()
        await self._link.close()
        if self._owns_connection:
            await asyncio.to_thread(ray.shutdown)

    def exposure(self) -> Sequence[str]:
        """What makes the joined cluster reachable by strangers (see ``ray_nodes``)."""
        return exposure_findings(_dashboard_address(), _token_auth(), _gcs_address())

    def placed(self, name: str) -> ReplicaRequest:
        """What ``name`` was started with."""
        return self._live(name).request

    async def placed_for(self, endpoint: str, model: str) -> dict[str, str]:
        """The replicas of ``model`` serving ``endpoint`` that a backend of the same
        ``owner`` placed on this cluster, by name, each with the node placement chose (from
        the records left at start; one that died unasked stays listed until it is placed
        again or stopped)."""
        timeout = self._link.settings.call_timeout_s
        return await self._link.call(_placed_for, endpoint, model, self.owner, timeout)

    async def connection(self, name: str, timeout_s: float) -> tuple[str, int, str] | None:
        """``(address, port, secret)`` of replica ``name``, which another process started:
        ``None`` while it loads, when it is not in Ray (not yet, or no longer), or when it
        gives no answer within ``timeout_s``."""
        try:
            pending = await self._link.call(_ask_connection, name, self._namespace)
        except ValueError:  # Ray knows no live actor of that name
            return None
        try:
            found = await asyncio.wait_for(pending, timeout_s)
        except (TimeoutError, ray.exceptions.RayError):
            return None
        if found is None:
            return None
        host, port, secret = found
        return str(host), int(port), str(secret)


async def _awaited(ref: Any) -> Any:
    return await ref


def _check_listening(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, naming the address, where nothing listens: ``ray.init`` would retry
    for minutes (and swap a loopback address for this machine's outward one)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise WorkerFailed(f"--ray-address: '{address}' is not HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise WorkerFailed(
            f"cannot join the Ray cluster at {address}: nothing answers there ({exc})"
        ) from exc


def _join(address: str, namespace: str) -> None:
    reset_auth_cache()  # a head that restarted may hold a new token; Ray read the old once
    ray.init(
        address=address,
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=False,
    )


def _gcs_client() -> Any:
    worker: Any = ray._private.worker.global_worker
    return worker.gcs_client


def _node_rows(timeout_s: float) -> list[dict[str, Any]]:
    """``ray.nodes()``'s rows from the GCS client, whose calls end at their timeout."""
    from ray.core.generated import gcs_pb2

    alive = gcs_pb2.GcsNodeInfo.GcsNodeState.Value("ALIVE")  # type: ignore[attr-defined]
    infos = _gcs_client().get_all_node_info(timeout=timeout_s)
    return [
        {
            "NodeID": node_id.hex(),
            "Alive": info.state == alive,
            "Resources": dict(info.resources_total),
            "Labels": dict(info.labels),
        }
        for node_id, info in infos.items()
    ]


def _actor_row(info: Any) -> dict[str, Any]:
    from ray.core.generated import gcs_pb2

    return {
        "Name": info.name,
        "RayNamespace": info.ray_namespace,
        "State": gcs_pb2.ActorTableData.ActorState.Name(info.state),  # type: ignore[attr-defined]
        "Address": {"NodeID": info.address.node_id.hex()},
        "DeathCause": info.death_cause,
    }


def _get_exit_reason(name: str, timeout_s: float) -> bytes | None:
    found: bytes | None = _gcs_client().internal_kv_get(name.encode(), _EXIT_KV, timeout=timeout_s)
    return found


def _del_exit_reason(name: str, timeout_s: float) -> None:
    _gcs_client().internal_kv_del(name.encode(), False, _EXIT_KV, timeout=timeout_s)


def _put_placed(request: ReplicaRequest, owner: str, timeout_s: float) -> None:
    record = {
        "model": request.model, "endpoint": request.endpoint, "node": request.node,
        "owner": owner,
    }  # fmt: skip
    value = json.dumps(record).encode()
    _gcs_client().internal_kv_put(request.name.encode(), value, True, _PLACED_KV, timeout=timeout_s)


def _placed_for(endpoint: str, model: str, owner: str, timeout_s: float) -> dict[str, str]:
    client = _gcs_client()
    keys = client.internal_kv_keys(b"", _PLACED_KV, timeout=timeout_s)
    if not keys:
        return {}
    values = client.internal_kv_multi_get(keys, _PLACED_KV, timeout=timeout_s)
    out: dict[str, str] = {}
    for key, raw in values.items():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        ours = record.get("owner", "") == owner
        if ours and record.get("endpoint") == endpoint and record.get("model") == model:
            out[key.decode()] = str(record.get("node", ""))
    return out


def _ask_connection(name: str, namespace: str) -> Any:
    """The pending answer of replica ``name``'s ``connection`` (``ValueError``: no such actor)."""
    handle: Any = ray.get_actor(name, namespace=namespace)
    return handle.connection.remote()


def _del_placed(name: str, timeout_s: float) -> None:
    _gcs_client().internal_kv_del(name.encode(), False, _PLACED_KV, timeout=timeout_s)


@dataclass(frozen=True, slots=True)
class PlacedReplica:
    """A modelplane replica as Ray holds it: for ``modelplane nodes`` in any process."""

    name: str
    node: str
    model: str
    endpoint: str
    state: str
    reason: str = ""


_RAY_STATES = {
    "ALIVE": (ReplicaState.READY, ""),
    "DEPENDENCIES_UNREADY": (ReplicaState.STARTING, "pending: Ray has not created it yet"),
    "PENDING_CREATION": (ReplicaState.STARTING, "pending: waiting for its node's resources"),
    "RESTARTING": (ReplicaState.STARTING, "restarting"),
}


def placed_replicas() -> list[PlacedReplica]:
    """Every modelplane replica in Ray, whoever started it: node, model and state.

    Read from Ray's actor table and the record each backend leaves at start (model,
    endpoint); a replica stopped on purpose has no record left and is not shown, one that
    died unasked is shown dead with its reason.
    """
    from ray.experimental import internal_kv

    names = {n.engine_id: n.name for n in nodes_from_ray(ray.nodes())}  # type: ignore[no-untyped-call]
    out: list[PlacedReplica] = []
    for name, row in sorted(_actor_table().items()):
        raw = internal_kv._internal_kv_get(name.encode(), namespace=_PLACED_KV)
        if not raw:
            continue  # not a replica of a backend, or stopped on purpose
        record = json.loads(raw)
        ray_state = str(row.get("State", ""))
        if ray_state == "DEAD":
            left = internal_kv._internal_kv_get(name.encode(), namespace=_EXIT_KV)
            state = ReplicaState.DEAD
            reason = left.decode() if left else _death_reason(row)
        else:
            state, reason = _RAY_STATES.get(ray_state, (ReplicaState.STARTING, ray_state.lower()))
        node_id = str((row.get("Address") or {}).get("NodeID", ""))
        node = names.get(node_id) or f"({record.get('node', '?')})"
        out.append(
            PlacedReplica(
                name,
                node,
                str(record.get("model", "")),
                str(record.get("endpoint", "")),
                state.value,
                reason,
            )
        )
    return out


def _state(row: dict[str, Any] | None, replica: _Replica) -> tuple[ReplicaState, str]:
    if replica.stopped:
        return ReplicaState.STOPPED, "stopped"
    if replica.lost:
        return ReplicaState.DEAD, replica.lost
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


def _newest_by_name(
    rows: Iterable[dict[str, Any]], namespace: str = NAMESPACE
) -> dict[str, dict[str, Any]]:
    """Our namespace's actors by name, the newest of each name (a name is reused on restart)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("RayNamespace") not in (None, namespace):
            continue
        name = str(row.get("Name") or "")
        if name and (name not in out or out[name].get("State") == "DEAD"):
            out[name] = row
    return out


def _actor_table() -> dict[str, dict[str, Any]]:
    """The actor table for a short-lived caller (the CLI): Ray's state accessor, unbounded."""
    from ray._private import state  # the GCS actor table; the public state API needs the dashboard

    return _newest_by_name(state.actors().values())


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

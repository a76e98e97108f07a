"""The embedded backend: this machine as one node, a process per replica.

The node is given by whoever builds the backend (``modelplane up`` detects it with
``controlplane.nodes.detect_local_node``; this layer may not import that), so capacity is what
this process may use, cgroups included. Each replica is a process of its own
(``backends.replica_child``, as under a Ray actor), sandboxed when its spec carries a policy,
answering on a loopback socket with the data plane's framing and a per-replica secret. The
backend refuses a replica for another node, and one that would take the node past its
capacity: placement decides, and the backend holds it to what was decided.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from modelplane.backends.replica_child import ReplicaChild, child_policy, describe_exit
from modelplane.backends.wire import Op, SocketChannel
from modelplane.core.backend import (
    Arrays,
    BackendNode,
    ReplicaRequest,
    ReplicaState,
    ReplicaStatus,
)
from modelplane.core.cluster import Binding, ClusterSnapshot
from modelplane.core.placement import choose_slots
from modelplane.errors import ModelplaneError, NotFound, WorkerFailed

__all__ = ["LocalBackend"]


@dataclass(slots=True)
class _Replica:
    request: ReplicaRequest
    child: ReplicaChild
    channel: SocketChannel | None = None


class LocalBackend:
    """Replicas as processes on this machine, which is the only node."""

    def __init__(self, node: BackendNode) -> None:
        self._node = node
        self._replicas: dict[str, _Replica] = {}

    @property
    def kind(self) -> str:
        return "local"

    async def nodes(self) -> Sequence[BackendNode]:
        return (self._node,)

    def _check_room(self, request: ReplicaRequest) -> None:
        if request.node != self._node.name:
            raise WorkerFailed(f"replica {request.name}: node {request.node} is not this machine")
        cluster = ClusterSnapshot.build([self._node.as_cluster_node()])
        for replica in self._replicas.values():
            demand = replica.request.demand
            cluster = cluster.bind(
                demand, Binding(0, choose_slots(cluster.gpu_free[0], demand), demand.gpu_milli)
            )
        if not cluster.fits(request.demand)[0]:
            raise WorkerFailed(
                f"replica {request.name} does not fit on {self._node.name}: "
                f"{int(cluster.cpu_free[0])}m CPU and {int(cluster.mem_free[0])} MiB free"
            )

    async def start(self, request: ReplicaRequest, timeout_s: float) -> ReplicaStatus:
        if request.name in self._replicas:
            raise WorkerFailed(f"replica {request.name} is already running")
        self._check_room(request)
        try:
            policy = child_policy(request)
        except (TypeError, ValueError) as exc:
            raise WorkerFailed(f"replica {request.name}: {exc}") from None
        secret = secrets.token_urlsafe(32)
        child = await asyncio.to_thread(
            ReplicaChild, request.spec, secret, request.warmup, "127.0.0.1", policy
        )
        replica = _Replica(request, child)
        self._replicas[request.name] = replica
        try:
            ready = await asyncio.to_thread(child.wait_ready, timeout_s)
            replica.channel = await SocketChannel.connect(
                "127.0.0.1", ready.port, secret, timeout_s
            )
        except BaseException as exc:
            await self.stop(request.name, 0.0)
            if isinstance(exc, WorkerFailed) and "could not load" in exc.message:
                raise WorkerFailed(f"replica {request.name} {exc.message}") from None
            raise
        return ReplicaStatus(
            request.name, self._node.name, ReplicaState.READY, pid=child.pid, request=request
        )

    async def stop(self, name: str, grace_s: float) -> None:
        replica = self._replicas.pop(name, None)
        if replica is None:
            return
        if replica.channel is not None:
            await replica.channel.close()
        await asyncio.to_thread(replica.child.kill, grace_s)

    async def replicas(self) -> Sequence[ReplicaStatus]:
        out: list[ReplicaStatus] = []
        for name, replica in self._replicas.items():
            child, channel = replica.child, replica.channel
            code = child.returncode
            if code is not None:
                state, reason = ReplicaState.DEAD, describe_exit(code)
            elif channel is None:
                state, reason = ReplicaState.STARTING, "loading"
            elif channel.closed:
                state, reason = ReplicaState.DEAD, "its connection broke"
            else:
                state, reason = ReplicaState.READY, ""
            out.append(
                ReplicaStatus(name, self._node.name, state, reason, child.pid, replica.request)
            )
        return out

    async def ping(self, name: str, timeout_s: float) -> bool:
        try:
            await self._channel(name).call(Op.PING, None, timeout_s)
        except ModelplaneError:
            return False
        return True

    async def predict(self, name: str, arrays: Arrays, timeout_s: float) -> Arrays:
        frame = await self._channel(name).call(Op.PREDICT, arrays, timeout_s)
        if frame.op is Op.ERROR:
            raise WorkerFailed(f"the model raised {frame.error_type}: {frame.error}")
        return frame.arrays

    def _channel(self, name: str) -> SocketChannel:
        replica = self._replicas.get(name)
        if replica is None or replica.channel is None:
            raise NotFound(f"no running replica {name}")
        return replica.channel

    async def close(self) -> None:
        for name in list(self._replicas):
            await self.stop(name, 2.0)

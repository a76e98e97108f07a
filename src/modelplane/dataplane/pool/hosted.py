"""What a model version's replicas are to the data plane, wherever they run.

The gateway's :class:`ModelVersionRuntime` holds one :class:`ReplicaPool`: the local
:class:`~modelplane.dataplane.pool.WorkerPool` (worker processes of this machine, the default)
or a pool whose replicas an execution backend hosts on other machines (``system.backend_pool``,
built when ``up`` runs on Ray). The gateway asks the same of both: start, predict with one
retry elsewhere when a replica is lost, resize, stop, and what each replica is doing. A
:class:`PoolFactory` given to the gateway (``GatewayConfig.pools``) chooses which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy.typing as npt

if TYPE_CHECKING:
    from modelplane.dataplane.pool.pool import PoolConfig, ReplicaInfo
    from modelplane.dataplane.pool.worker import WorkerSpec
    from modelplane.spec.fields import Signature
    from modelplane.spec.manifest import Resources

__all__ = ["PoolFactory", "PoolRequest", "ReplicaPool"]

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class PoolRequest:
    """Everything a pool of one model version serving one endpoint is built from."""

    name: str
    """``endpoint/label``: how logs and errors name the pool."""
    spec: WorkerSpec
    signature: Signature
    config: PoolConfig
    endpoint: str
    label: str
    """The model version, ``name:version``."""
    team: str
    tier: str
    resources: Resources
    """What each replica asked for in its package manifest."""
    package: tuple[str, str] | None = None
    """``(folder, digest)`` of the package the replicas load (a backend fetches it onto a
    node that lacks the folder)."""


class ReplicaPool(Protocol):
    """The replicas of one model version, as the gateway drives them."""

    name: str
    config: PoolConfig
    restarts: int
    """Replicas that died and came back (a counter for metrics)."""
    revivals: int
    """Times the pool went from no ready replica to one (an open breaker probes then)."""

    @property
    def stopping(self) -> bool: ...

    def replicas(self) -> list[ReplicaInfo]: ...

    async def start(self) -> None:
        """Return once every replica is ready; raise ``WorkerFailed`` if none got ready."""
        ...

    async def predict(self, arrays: Arrays, timeout_s: float) -> Arrays:
        """One batch on the least loaded ready replica; a request whose replica is lost
        (``ReplicaLost``) is retried once on another."""
        ...

    async def resize(self, replicas: int) -> None: ...

    async def stop(self) -> None:
        """Drain in-flight requests (bounded), then stop every replica."""
        ...


PoolFactory = Callable[[PoolRequest], ReplicaPool]

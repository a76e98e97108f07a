"""Worker processes for model versions: typed IPC, supervision, least-outstanding choice."""

from modelplane.dataplane.pool.hosted import PoolFactory, PoolRequest, ReplicaPool
from modelplane.dataplane.pool.pool import PoolConfig, ReplicaInfo, WorkerPool, least_outstanding
from modelplane.dataplane.pool.replica import ModelRaised, ReplicaState
from modelplane.dataplane.pool.sample import sample_inputs
from modelplane.dataplane.pool.worker import WorkerSpec

__all__ = [
    "ModelRaised",
    "PoolConfig",
    "PoolFactory",
    "PoolRequest",
    "ReplicaInfo",
    "ReplicaPool",
    "ReplicaState",
    "WorkerPool",
    "WorkerSpec",
    "least_outstanding",
    "sample_inputs",
]

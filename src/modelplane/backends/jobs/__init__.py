"""Batch jobs on this platform's executors: plans and checks, the shard runner, and the
local-process and Ray executors the job controller drives."""

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.backends.jobs.models import JobModel, fetch_package, resolve_model
from modelplane.backends.jobs.plan import (
    DatasetInfo,
    check_columns,
    check_output,
    claim_output,
    inspect_dataset,
    plan_batch_score,
    plan_shards,
    shard_task,
    write_success,
)

__all__ = [
    "DatasetInfo",
    "JobModel",
    "LocalShardExecutor",
    "check_columns",
    "check_output",
    "claim_output",
    "fetch_package",
    "inspect_dataset",
    "plan_batch_score",
    "plan_shards",
    "resolve_model",
    "shard_task",
    "write_success",
]

"""The cluster model: nodes with CPU, memory, GPUs (shareable in milli-GPU), labels and cost.

Units are the scheduler's own so nothing is converted on the hot path: CPU in millicores,
memory in MiB, GPU in milli-GPU (1000 = one whole device). A node has at most one GPU
model, which is how real machines (and the Alibaba openb trace) are built.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.names import Name

__all__ = ["MAX_GPUS_PER_NODE", "ClusterSpec", "GPUs", "LocalNodeSpec", "NodeSpec"]

MAX_GPUS_PER_NODE = 16
"""Bounds the per-node GPU table the scheduler keeps; no machine we know of has more."""


class GPUs(BaseModel):
    """The accelerators of one node: all of one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, max_length=63)
    count: int = Field(ge=1, le=MAX_GPUS_PER_NODE)
    memory_mib: int = Field(default=0, ge=0, description="memory of each device; 0 = unknown")


class NodeSpec(BaseModel):
    """One machine the scheduler may place workloads on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    cpu_milli: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    gpus: GPUs | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    cost_per_hour: float = Field(default=0.0, ge=0.0)


class LocalNodeSpec(BaseModel):
    """The machine modelplane runs on: its capacity is detected, the rest people declare.

    Capacity (CPU, memory, GPUs) is read from the OS each time it is needed, so a resized
    container or a new GPU shows up without an edit. A declared node with the local node's
    name replaces what was detected (to hold capacity back for other programs).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    detect: bool = True
    name: Name | None = None
    """Default: the host name, made a valid name."""
    labels: dict[str, str] = Field(default_factory=dict)
    cost_per_hour: float = Field(default=0.0, ge=0.0)


class ClusterSpec(BaseModel):
    """Declared nodes, for planning now and for the Ray backend later."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["Cluster"] = "Cluster"
    name: Name = "default"
    nodes: tuple[NodeSpec, ...] = ()
    local: LocalNodeSpec = LocalNodeSpec()

    @model_validator(mode="after")
    def _unique_names(self) -> ClusterSpec:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise PydanticCustomError(
                    "duplicate", "node '{name}' is declared twice", {"name": node.name}
                )
            seen.add(node.name)
        return self

    @property
    def gpu_count(self) -> int:
        return sum(n.gpus.count for n in self.nodes if n.gpus is not None)

"""Usage intervals: what a workload reserved against what it used, kept in the state store.

A workload is a serving replica (endpoint, route, version, replica index) or a job's shard
(job, shard index). Each :class:`UsageInterval` covers ``[start, end]`` (Unix seconds) on
one node: the resources the workload held for that time (CPU millicores, memory MiB, a
fraction of a GPU) and what it used of them (CPU seconds, peak and mean memory, GPU
utilization and memory where there is a GPU). The sampler in ``modelplane up`` writes one
per replica every minute or so; the job controller writes one per shard attempt when it
ends (:func:`record_usage`).

Beside them, :class:`NodeInterval` s record what each node offered over the same time and
its price, so a report prices the period from what existed then, not from today's cluster
model, and charges idle capacity to nobody but the ``idle`` line
(see :mod:`modelplane.observe.cost`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Engine, insert, select

from modelplane.errors import InvalidSpec
from modelplane.store.db import read_session, write_session
from modelplane.store.schema import UsageIntervalRow, UsageNodeRow

__all__ = [
    "NodeInterval",
    "UsageInterval",
    "WorkloadKind",
    "as_document",
    "read_nodes",
    "read_usage",
    "record_nodes",
    "record_period",
    "record_usage",
]

_NAME_MAX = 63
_LABEL_MAX = 200


class WorkloadKind(StrEnum):
    """What held the resources."""

    REPLICA = "replica"
    """A serving replica: one worker process of one model version of an endpoint."""
    SHARD = "shard"
    """One attempt of one shard of a batch job."""


def _bad(field: str, problem: str) -> InvalidSpec:
    return InvalidSpec(
        f"usage interval: {field} {problem}", details=[{"field": field, "problem": problem}]
    )


def _check_number(field: str, value: float | None, *, upper: float | None = None) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0:
        raise _bad(field, f"must be a finite number >= 0, not {value!r}")
    if upper is not None and value > upper:
        raise _bad(field, f"must be at most {upper:g}, not {value!r}")


def _check_text(field: str, value: str | None, limit: int, *, required: bool) -> None:
    if value is None or value == "":
        if required:
            raise _bad(field, "is required")
        return
    if len(value) > limit:
        raise _bad(field, f"is longer than {limit} characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageInterval:
    """One workload on one node over ``[start, end]``: reserved against used.

    Build a replica's with ``endpoint``, ``route``, ``version`` and ``replica``; a shard's
    with ``job`` and ``shard`` (and ``queue_wait_s``: how long its job waited for
    admission; the same for every shard of a job, counted once per job). Bad values raise
    :class:`~modelplane.errors.InvalidSpec` naming the field, before anything is stored.
    """

    kind: WorkloadKind
    team: str
    node: str
    start: float
    end: float
    tier: str = "standard"
    # what the workload holds
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_fraction: float = 0.0
    """Share of GPU devices held: 0.25 is a quarter of one device, 2.0 is two devices."""
    gpu_model: str | None = None
    # what it used of it
    cpu_seconds: float = 0.0
    """CPU time (user + system) spent over the interval."""
    cpu_peak_milli: float | None = None
    """Highest CPU rate between two readings, in millicores; ``None``: only the mean
    (``cpu_seconds / seconds``) is known."""
    memory_peak_mib: float = 0.0
    memory_mean_mib: float | None = None
    """``None``: only the peak is known, and reports count the peak as used."""
    gpu_util: float | None = None
    """GPU devices kept busy, on average: 0.25 is a quarter of one device's time (all of a
    quarter GPU held, or half of a half). ``None``: no GPU was measured, which is not the
    same as an idle GPU."""
    gpu_memory_mib: float | None = None
    """Peak GPU memory the workload's processes held."""
    samples: int = 0
    """How many readings the used figures summarize (0: one reading at the end)."""
    # who it was
    endpoint: str | None = None
    route: str | None = None
    version: str | None = None
    replica: int | None = None
    job: str | None = None
    shard: int | None = None
    queue_wait_s: float | None = None
    """A shard's job's wait for admission (submitted to admitted)."""

    def __post_init__(self) -> None:
        try:
            kind = WorkloadKind(self.kind)
        except ValueError:
            raise _bad("kind", f"must be one of {[k.value for k in WorkloadKind]}") from None
        object.__setattr__(self, "kind", kind)
        for name in ("team", "node", "tier"):
            _check_text(name, getattr(self, name), _NAME_MAX, required=True)
        for name, limit in (("endpoint", _NAME_MAX), ("job", _LABEL_MAX), ("gpu_model", _NAME_MAX),
                            ("route", _LABEL_MAX), ("version", _LABEL_MAX)):  # fmt: skip
            _check_text(name, getattr(self, name), limit, required=False)
        if kind is WorkloadKind.REPLICA and not self.endpoint:
            raise _bad("endpoint", "is required for a replica")
        if kind is WorkloadKind.SHARD and (not self.job or self.shard is None):
            raise _bad("job" if not self.job else "shard", "is required for a shard")
        for name in ("start", "end"):
            _check_number(name, getattr(self, name))
        if self.end < self.start:
            raise _bad("end", f"({self.end}) is before start ({self.start})")
        _check_number("cpu_milli", self.cpu_milli)
        _check_number("memory_mib", self.memory_mib)
        _check_number("gpu_fraction", self.gpu_fraction)
        _check_number("cpu_seconds", self.cpu_seconds)
        _check_number("cpu_peak_milli", self.cpu_peak_milli)
        _check_number("memory_peak_mib", self.memory_peak_mib)
        _check_number("memory_mean_mib", self.memory_mean_mib, upper=self.memory_peak_mib)
        _check_number("gpu_util", self.gpu_util)
        _check_number("gpu_memory_mib", self.gpu_memory_mib)
        _check_number("queue_wait_s", self.queue_wait_s)
        for name in ("samples", "replica", "shard"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise _bad(name, f"must be >= 0, not {value}")

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def workload(self) -> str:
        """A short name of the workload: ``fraud-score/fraud:2#0`` or ``score-q3/shard-4``."""
        if self.kind is WorkloadKind.SHARD:
            return f"{self.job}/shard-{self.shard}"
        return f"{self.endpoint}/{self.version or self.route or '?'}#{self.replica or 0}"

    def clipped(self, since: float, until: float) -> UsageInterval | None:
        """The part of this interval inside ``[since, until]``, what was used scaled by the
        share of time kept (peaks are kept as they are); ``None`` when nothing overlaps."""
        start, end = max(self.start, since), min(self.end, until)
        if end < start or (end == start and self.end > self.start):
            return None
        if start == self.start and end == self.end:
            return self
        share = (end - start) / self.seconds
        return _replace(self, start=start, end=end, cpu_seconds=self.cpu_seconds * share)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInterval:
    """What one node offered over ``[start, end]``, and its price then."""

    node: str
    start: float
    end: float
    cpu_milli: int
    memory_mib: int
    gpu_count: int = 0
    gpu_model: str | None = None
    cost_per_hour: float = 0.0

    def __post_init__(self) -> None:
        _check_text("node", self.node, _NAME_MAX, required=True)
        _check_text("gpu_model", self.gpu_model, _NAME_MAX, required=False)
        for name in ("start", "end", "cost_per_hour"):
            _check_number(name, getattr(self, name))
        if self.end < self.start:
            raise _bad("end", f"({self.end}) is before start ({self.start})")
        if self.cpu_milli < 1 or self.memory_mib < 1:
            raise _bad("cpu_milli" if self.cpu_milli < 1 else "memory_mib", "must be >= 1")
        if self.gpu_count < 0:
            raise _bad("gpu_count", f"must be >= 0, not {self.gpu_count}")

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def clipped(self, since: float, until: float) -> NodeInterval | None:
        start, end = max(self.start, since), min(self.end, until)
        if end <= start:
            return None
        if start == self.start and end == self.end:
            return self
        return _replace(self, start=start, end=end)


_Item = TypeVar("_Item", UsageInterval, NodeInterval)


def _replace(item: _Item, **changes: Any) -> _Item:
    values = {f.name: getattr(item, f.name) for f in fields(item)}
    return type(item)(**(values | changes))


def record_usage(engine: Engine, *intervals: UsageInterval) -> None:
    """Store ``intervals`` in one transaction (all or none)."""
    record_period(engine, intervals, ())


def record_nodes(engine: Engine, *nodes: NodeInterval) -> None:
    """Store what the nodes offered, in one transaction."""
    record_period(engine, (), nodes)


def record_period(
    engine: Engine, intervals: Sequence[UsageInterval], nodes: Sequence[NodeInterval]
) -> None:
    """Store workloads' intervals and what the nodes offered meanwhile, all or none."""
    if not intervals and not nodes:
        return
    with write_session(engine) as session:
        if intervals:
            rows = [{**asdict(i), "kind": i.kind.value} for i in intervals]
            session.execute(insert(UsageIntervalRow), rows)
        if nodes:
            session.execute(insert(UsageNodeRow), [asdict(n) for n in nodes])


_USAGE = UsageIntervalRow.metadata.tables["usage_intervals"]
_NODES = UsageNodeRow.metadata.tables["usage_nodes"]
_USAGE_FIELDS = tuple(f.name for f in fields(UsageInterval))
_NODE_FIELDS = tuple(f.name for f in fields(NodeInterval))


def read_usage(
    engine: Engine,
    since: float,
    until: float,
    *,
    teams: Sequence[str] | None = None,
    kinds: Iterable[WorkloadKind] | None = None,
) -> list[UsageInterval]:
    """Intervals overlapping ``[since, until]``, clipped to it, oldest first."""
    query = select(*(_USAGE.c[name] for name in _USAGE_FIELDS)).where(
        _USAGE.c.end >= since, _USAGE.c.start <= until
    )
    if teams is not None:
        query = query.where(_USAGE.c.team.in_(list(teams)))
    if kinds is not None:
        query = query.where(_USAGE.c.kind.in_([WorkloadKind(k).value for k in kinds]))
    with read_session(engine) as session:
        found = session.execute(query.order_by(_USAGE.c.start, _USAGE.c.id)).all()
    stored = (_stored(UsageInterval, _USAGE_FIELDS, row) for row in found)
    return [c for i in stored if (c := i.clipped(since, until)) is not None]


def read_nodes(engine: Engine, since: float, until: float) -> list[NodeInterval]:
    """Node intervals overlapping ``[since, until]``, clipped to it, oldest first."""
    query = select(*(_NODES.c[name] for name in _NODE_FIELDS)).where(
        _NODES.c.end > since, _NODES.c.start < until
    )
    with read_session(engine) as session:
        found = session.execute(query.order_by(_NODES.c.start, _NODES.c.id)).all()
    stored = (_stored(NodeInterval, _NODE_FIELDS, row) for row in found)
    return [c for n in stored if (c := n.clipped(since, until)) is not None]


def _stored(cls: type[_Item], names: Sequence[str], row: Sequence[Any]) -> _Item:
    """A row as its dataclass, unchecked: it was checked before it was written, and a
    week's report reads hundreds of thousands."""
    item = object.__new__(cls)
    for name, value in zip(names, row, strict=True):
        object.__setattr__(item, name, value)
    if isinstance(item, UsageInterval):
        object.__setattr__(item, "kind", WorkloadKind(item.kind))
    return item


def as_document(interval: UsageInterval) -> dict[str, Any]:
    """An interval as plain JSON values."""
    return {**asdict(interval), "kind": interval.kind.value}

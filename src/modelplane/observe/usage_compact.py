"""Merging old usage intervals into hourly ones, so a week's report reads hundreds of rows
per replica, not ten thousand.

The sampler writes one interval per replica (and per node) a minute. Intervals that ended
more than :data:`FINE_S` ago are merged, per workload and per hour (by the hour their end
falls in), into one interval per unbroken run: consecutive intervals that meet, with the
same reservation, team, tier and node. A gap (a replica down, ``up`` stopped) stays a gap,
so reserved time is never invented. Sums stay sums (CPU seconds, samples), peaks stay peaks,
means are weighted by time. Shards are left as they are: one per attempt, already few.

A report over a period that cuts a merged interval prorates its CPU time by the share of
time inside (an hour's resolution at the period's edges, beyond :data:`FINE_S`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, delete, insert, select

from modelplane.observe.usage import NodeInterval, UsageInterval, WorkloadKind
from modelplane.store.db import write_session
from modelplane.store.schema import UsageIntervalRow, UsageNodeRow

__all__ = ["BUCKET_S", "FINE_S", "MAX_PASS_ROWS", "compact", "merge_nodes", "merge_usage"]

FINE_S = 6 * 3600.0
"""Intervals younger than this keep their own rows."""
BUCKET_S = 3600.0
"""Older ones are merged into runs within each hour."""
_MEET_S = 1e-3
"""Consecutive intervals meet when one starts within this of the other's end (the sampler
ends one and starts the next at the same reading)."""
MAX_PASS_ROWS = 20_000
"""One pass reads at most this many rows of each table, oldest first, so a long backlog is
taken in bounded bites (a run cut at the edge is merged further by a later pass)."""

_USAGE = UsageIntervalRow.metadata.tables["usage_intervals"]
_NODES = UsageNodeRow.metadata.tables["usage_nodes"]
_USAGE_FIELDS = tuple(f.name for f in fields(UsageInterval))
_NODE_FIELDS = tuple(f.name for f in fields(NodeInterval))
# What must be equal for two intervals to be one workload's run.
_USAGE_KEY = ("kind", "endpoint", "route", "version", "replica", "team", "tier", "node",
              "cpu_milli", "memory_mib", "gpu_fraction", "gpu_model")  # fmt: skip
_NODE_KEY = ("node", "cpu_milli", "memory_mib", "gpu_count", "gpu_model", "cost_per_hour")

T = TypeVar("T")
Key = Callable[[T], tuple[Any, ...]]
Span = Callable[[T], tuple[float, float]]


def _runs(
    items: Sequence[T],
    key: Callable[[T], tuple[Any, ...]],
    span: Callable[[T], tuple[float, float]],
) -> list[list[T]]:
    """``items`` in runs: same key, same hour of end, each meeting the one before."""

    def order(item: T) -> tuple[Any, ...]:
        start, end = span(item)
        return (repr(key(item)), math.ceil(end / BUCKET_S), start)

    runs: list[list[T]] = []
    for item in sorted(items, key=order):
        if runs and _continues(runs[-1][-1], item, key, span):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _continues(last: T, item: T, key: Key[T], span: Span[T]) -> bool:
    same_hour = math.ceil(span(last)[1] / BUCKET_S) == math.ceil(span(item)[1] / BUCKET_S)
    return key(last) == key(item) and same_hour and abs(span(item)[0] - span(last)[1]) <= _MEET_S


def _weighted(values: Iterable[tuple[float | None, float]]) -> float | None:
    pairs = [(v, w) for v, w in values if v is not None]
    total = math.fsum(w for _, w in pairs)
    if not pairs:
        return None
    if total == 0:
        return pairs[-1][0]
    return math.fsum(v * w for v, w in pairs) / total


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def merge_usage(run: Sequence[UsageInterval]) -> UsageInterval:
    """One interval for a run of a workload's meeting intervals."""
    first, last = run[0], run[-1]
    timed = [(i, i.seconds) for i in run]
    peak = max(i.memory_peak_mib for i in run)
    mean = _weighted((i.memory_mean_mib, s) for i, s in timed)
    return UsageInterval(
        **{name: getattr(first, name) for name in _USAGE_KEY},
        job=first.job,
        shard=first.shard,
        start=first.start,
        end=last.end,
        cpu_seconds=math.fsum(i.cpu_seconds for i in run),
        cpu_peak_milli=_max(i.cpu_peak_milli for i in run),
        memory_peak_mib=peak,
        memory_mean_mib=None if mean is None else min(mean, peak),
        gpu_util=_weighted((i.gpu_util, s) for i, s in timed),
        gpu_memory_mib=_max(i.gpu_memory_mib for i in run),
        samples=sum(i.samples for i in run),
        queue_wait_s=_max(i.queue_wait_s for i in run),
    )


def merge_nodes(run: Sequence[NodeInterval]) -> NodeInterval:
    first = run[0]
    values = {name: getattr(first, name) for name in _NODE_KEY}
    return NodeInterval(**values, start=first.start, end=run[-1].end)


def compact(engine: Engine, now: float, *, max_rows: int = MAX_PASS_ROWS) -> int:
    """Merge replicas' and nodes' intervals that ended before ``now - FINE_S`` (the oldest
    ``max_rows`` of each per call); the rows removed."""
    cutoff = now - FINE_S
    removed = 0
    with write_session(engine) as session:
        for table, names, key_names, is_usage in (
            (_USAGE, _USAGE_FIELDS, _USAGE_KEY, True),
            (_NODES, _NODE_FIELDS, _NODE_KEY, False),
        ):
            old = [table.c.end <= cutoff, table.c.end - table.c.start < BUCKET_S]
            if is_usage:
                old.append(table.c.kind == WorkloadKind.REPLICA.value)
            query = select(table.c.id, *(table.c[n] for n in names)).where(and_(*old))
            rows = session.execute(query.order_by(table.c.end).limit(max_rows)).all()
            removed += _merge_rows(session, table, names, key_names, rows, is_usage=is_usage)
    return removed


def _merge_rows(session: Any, table: Any, names: Sequence[str], key_names: Sequence[str],
                rows: Sequence[Any], *, is_usage: bool) -> int:  # fmt: skip
    build: Callable[..., Any] = UsageInterval if is_usage else NodeInterval
    items = [(row[0], build(**dict(zip(names, row[1:], strict=True)))) for row in rows]

    def key(pair: tuple[int, Any]) -> tuple[Any, ...]:
        return tuple(getattr(pair[1], n) for n in key_names)

    def span(pair: tuple[int, Any]) -> tuple[float, float]:
        return pair[1].start, pair[1].end

    runs = [run for run in _runs(items, key, span) if len(run) > 1]
    if not runs:
        return 0
    merge: Callable[[list[Any]], Any] = merge_usage if is_usage else merge_nodes
    merged = [merge([i for _, i in run]) for run in runs]
    gone = [row_id for run in runs for row_id, _ in run]
    for chunk in range(0, len(gone), 500):
        session.execute(delete(table).where(table.c.id.in_(gone[chunk : chunk + 500])))
    values = [{n: getattr(m, n) for n in names} for m in merged]
    if is_usage:
        for value in values:
            value["kind"] = value["kind"].value
    session.execute(insert(table), values)
    return len(gone) - len(merged)

"""Cost of usage: each workload's share of its node's price, and the idle rest.

Pricing, per node and per moment:

1. A node's price per hour is split over its resources in the ratio of
   :data:`REFERENCE_PRICES` (OpenCost's default list prices: per core-hour, GiB-hour and
   GPU-hour), so a node's CPU, memory and GPUs together cost exactly its price.
2. A workload is charged for what it reserved, at those unit prices. A GPU fraction is
   charged as that fraction of a device (OpenCost's users report fractional GPUs billed
   as whole ones, opencost#3828). When the reservations on a node add up to more than it
   has (the local node runs whatever it is asked to), each is charged its share of the
   capacity, never more than the capacity costs.
3. What nobody reserved is ``idle``: the node's capacity left over, at the same prices.

So, over any period, the teams' costs plus the idle cost are the nodes' cost: the sums are
taken segment by segment between the moments any interval starts or ends (a sweep over
each node), and in every segment the charged shares and the idle rest add up to the
capacity. A workload on a node with no recorded price for a moment is counted in
resource-seconds but costs nothing then (``unpriced_s`` says how long).

Waste is the part of a reservation not used: per resource, the unused share of what a
workload was charged. Right-sizing to the observed peak would save, per resource, the
charge for what was reserved above the peak.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from modelplane.observe.usage import NodeInterval, UsageInterval, WorkloadKind

__all__ = [
    "REFERENCE_PRICES",
    "RESOURCES",
    "Charge",
    "CostReport",
    "GroupUsage",
    "TeamCost",
    "UnitPrices",
    "charge",
    "cost_report",
    "group_usage",
    "unit_prices",
]

RESOURCES = ("cpu", "memory", "gpu")
"""The priced resources, in units of cores, GiB and GPU devices."""
_HOUR_S = 3600.0
_MIB_PER_GIB = 1024.0


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """Price per hour of one core, one GiB of memory and one GPU device."""

    cpu: float
    memory: float
    gpu: float

    def of(self, resource: str) -> float:
        return float(getattr(self, resource))


REFERENCE_PRICES = UnitPrices(cpu=0.031611, memory=0.004237, gpu=0.95)
"""OpenCost's default prices (USD per core-hour, GiB-hour and GPU-hour): only their ratios
matter here, to split a node's price over its resources, and to rank waste where nodes
have no price."""


def _node_amounts(node: NodeInterval) -> tuple[float, float, float]:
    return node.cpu_milli / 1000.0, node.memory_mib / _MIB_PER_GIB, float(node.gpu_count)


def _reserved_amounts(interval: UsageInterval) -> tuple[float, float, float]:
    return interval.cpu_milli / 1000.0, interval.memory_mib / _MIB_PER_GIB, interval.gpu_fraction


def _used_amount_seconds(interval: UsageInterval) -> tuple[float, float, float]:
    """Cores, GiB and devices used, times seconds, over the interval."""
    gpu = (interval.gpu_util or 0.0) * interval.seconds
    mean = interval.memory_mean_mib
    memory = interval.memory_peak_mib if mean is None else mean
    return interval.cpu_seconds, memory / _MIB_PER_GIB * interval.seconds, gpu


def _peak_amounts(interval: UsageInterval) -> tuple[float, float, float]:
    """The highest rate seen: cores, GiB, devices."""
    if interval.cpu_peak_milli is not None:
        cpu = interval.cpu_peak_milli / 1000.0
    else:
        cpu = interval.cpu_seconds / interval.seconds if interval.seconds > 0 else 0.0
    return cpu, interval.memory_peak_mib / _MIB_PER_GIB, interval.gpu_util or 0.0


def unit_prices(node: NodeInterval, reference: UnitPrices = REFERENCE_PRICES) -> UnitPrices:
    """The node's price per hour split over its resources in the ratio of ``reference``."""
    cores, gib, gpus = _node_amounts(node)
    listed = cores * reference.cpu + gib * reference.memory + gpus * reference.gpu
    if node.cost_per_hour == 0 or listed == 0:
        return UnitPrices(0.0, 0.0, 0.0)
    scale = node.cost_per_hour / listed
    return UnitPrices(reference.cpu * scale, reference.memory * scale, reference.gpu * scale)


@dataclass(frozen=True, slots=True)
class Charge:
    """What one interval costs, by resource (in the nodes' currency)."""

    interval: UsageInterval
    cost: tuple[float, float, float]
    unpriced_s: float = 0.0

    @property
    def total(self) -> float:
        return math.fsum(self.cost)

    def waste(self) -> tuple[float, float, float]:
        """Per resource, the charge for the reserved share that went unused."""
        reserved = _reserved_amounts(self.interval)
        used = _used_amount_seconds(self.interval)
        seconds = self.interval.seconds
        return tuple(  # type: ignore[return-value]
            cost * _unused_share(r * seconds, u)
            for cost, r, u in zip(self.cost, reserved, used, strict=True)
        )

    def saving_at(self, peak: Sequence[float]) -> tuple[float, float, float]:
        """Per resource, the charge for what was reserved above ``peak`` (a rate)."""
        reserved = _reserved_amounts(self.interval)
        return tuple(  # type: ignore[return-value]
            cost * max(0.0, r - p) / r if r > 0 else 0.0
            for cost, r, p in zip(self.cost, reserved, peak, strict=True)
        )


def _unused_share(reserved: float, used: float) -> float:
    return max(0.0, reserved - used) / reserved if reserved > 0 else 0.0


@dataclass(slots=True)
class _NodeTotals:
    cost: float = 0.0
    idle: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


def charge(
    usage: Iterable[UsageInterval],
    nodes: Iterable[NodeInterval],
    reference: UnitPrices = REFERENCE_PRICES,
) -> tuple[list[Charge], float, tuple[float, float, float]]:
    """Charges of ``usage``, the nodes' cost and the idle cost by resource, over the times
    the intervals cover (clip them to the period first, as :func:`read_usage` does)."""
    by_node: defaultdict[str, list[UsageInterval]] = defaultdict(list)
    for interval in usage:
        by_node[interval.node].append(interval)
    offers: defaultdict[str, list[NodeInterval]] = defaultdict(list)
    for node in nodes:
        offers[node.node].append(node)
    charges: list[Charge] = []
    totals = _NodeTotals()
    for name in sorted(set(by_node) | set(offers)):
        charges.extend(_sweep(by_node.get(name, []), offers.get(name, []), reference, totals))
    return charges, totals.cost, (totals.idle[0], totals.idle[1], totals.idle[2])


def _sweep(
    usage: Sequence[UsageInterval],
    offers: Sequence[NodeInterval],
    reference: UnitPrices,
    totals: _NodeTotals,
) -> list[Charge]:
    """One node: charge each segment between consecutive boundaries, keeping the
    intervals open at the segment's start (``start <= a < end``) as the sweep moves."""
    spans = [(i.start, i.end) for i in usage] + [(o.start, o.end) for o in offers]
    cuts = sorted({t for span in spans for t in span})
    costs = [[0.0, 0.0, 0.0] for _ in usage]
    unpriced = [0.0 for _ in usage]
    open_usage = _Opened(usage)
    open_offers = _Opened(offers)
    for a, b in itertools.pairwise(cuts):
        dt = b - a
        active = open_usage.at(a)
        offered = open_offers.at(a)
        if not offered:
            for k in active:
                unpriced[k] += dt
            continue
        # Two samplers may record one node twice over: its price counts once.
        offer = offers[min(offered)]
        prices = unit_prices(offer, reference)
        capacity = _node_amounts(offer)
        totals.cost += offer.cost_per_hour * dt / _HOUR_S
        reserved = [(k, _reserved_amounts(usage[k])) for k in active]
        for d, resource in enumerate(RESOURCES):
            held = math.fsum(r[d] for _, r in reserved)
            scale = min(1.0, capacity[d] / held) if held > 0 else 1.0
            price_s = prices.of(resource) / _HOUR_S
            for k, r in reserved:
                costs[k][d] += r[d] * scale * price_s * dt
            totals.idle[d] += max(0.0, capacity[d] - held) * price_s * dt
    return [
        Charge(i, (c[0], c[1], c[2]), unpriced_s=u)
        for i, c, u in zip(usage, costs, unpriced, strict=True)
    ]


class _Opened:
    """Which of some intervals are open at a moment, for moments given in order."""

    def __init__(self, items: Sequence[UsageInterval] | Sequence[NodeInterval]) -> None:
        self._items = items
        self._by_start = sorted(range(len(items)), key=lambda k: items[k].start)
        self._next = 0
        self._ends: list[tuple[float, int]] = []
        self._open: set[int] = set()

    def at(self, moment: float) -> set[int]:
        while self._next < len(self._by_start):
            k = self._by_start[self._next]
            if self._items[k].start > moment:
                break
            self._next += 1
            heapq.heappush(self._ends, (self._items[k].end, k))
            self._open.add(k)
        while self._ends and self._ends[0][0] <= moment:
            self._open.discard(heapq.heappop(self._ends)[1])
        return self._open


@dataclass(frozen=True, slots=True)
class TeamCost:
    """One team over the period: resource-seconds reserved and used, cost and waste."""

    team: str
    reserved: Mapping[str, float]
    """Resource-seconds by resource (core-s, GiB-s, GPU-s)."""
    used: Mapping[str, float]
    cost: float
    serving_cost: float
    jobs_cost: float
    waste: float
    """The cost of what was reserved and not used."""
    idle_share: float
    """Unused share of the reservation, weighted by the reference prices (unit-free)."""
    shards: int
    jobs: int
    queue_wait_s: float
    """Summed wait for admission of the team's jobs (each job once)."""
    unpriced_s: float


@dataclass(frozen=True, slots=True)
class CostReport:
    since: float
    until: float
    nodes_cost: float
    idle_cost: float
    """What no workload reserved on the nodes: capacity left over, at the nodes' prices."""
    idle_by_resource: Mapping[str, float]
    teams: tuple[TeamCost, ...]

    @property
    def teams_cost(self) -> float:
        return math.fsum(t.cost for t in self.teams)


def _weighted(amounts: Sequence[float], reference: UnitPrices) -> float:
    return math.fsum(a * reference.of(r) for a, r in zip(amounts, RESOURCES, strict=True))


def cost_report(
    usage: Sequence[UsageInterval],
    nodes: Sequence[NodeInterval],
    since: float,
    until: float,
    *,
    teams: Sequence[str] | None = None,
    reference: UnitPrices = REFERENCE_PRICES,
) -> CostReport:
    """Cost by team over ``[since, until]``; ``teams`` narrows the rows shown, never the
    nodes' cost or idle, which belong to everyone."""
    charges, nodes_cost, idle = charge(usage, nodes, reference)
    by_team: defaultdict[str, list[Charge]] = defaultdict(list)
    for c in charges:
        by_team[c.interval.team].append(c)
    rows = [
        _team_row(name, found, reference)
        for name, found in sorted(by_team.items())
        if teams is None or name in teams
    ]
    return CostReport(
        since=since,
        until=until,
        nodes_cost=nodes_cost,
        idle_cost=math.fsum(idle),
        idle_by_resource=dict(zip(RESOURCES, idle, strict=True)),
        teams=tuple(rows),
    )


def _team_row(team: str, charges: Sequence[Charge], reference: UnitPrices) -> TeamCost:
    reserved = [0.0, 0.0, 0.0]
    used = [0.0, 0.0, 0.0]
    for c in charges:
        seconds = c.interval.seconds
        for d, (r, u) in enumerate(
            zip(_reserved_amounts(c.interval), _used_amount_seconds(c.interval), strict=True)
        ):
            reserved[d] += r * seconds
            used[d] += u
    unused = [max(0.0, r - u) for r, u in zip(reserved, used, strict=True)]
    weight = _weighted(reserved, reference)
    shards = [c.interval for c in charges if c.interval.kind is WorkloadKind.SHARD]
    return TeamCost(
        team=team,
        reserved=dict(zip(RESOURCES, reserved, strict=True)),
        used=dict(zip(RESOURCES, used, strict=True)),
        cost=math.fsum(c.total for c in charges),
        serving_cost=math.fsum(c.total for c in charges if c.interval.kind is WorkloadKind.REPLICA),
        jobs_cost=math.fsum(c.total for c in charges if c.interval.kind is WorkloadKind.SHARD),
        waste=math.fsum(w for c in charges for w in c.waste()),
        idle_share=_weighted(unused, reference) / weight if weight > 0 else 0.0,
        shards=len({(s.job, s.shard) for s in shards}),
        jobs=len({s.job for s in shards}),
        queue_wait_s=_queue_wait(shards),
        unpriced_s=math.fsum(c.unpriced_s for c in charges),
    )


def _queue_wait(shards: Sequence[UsageInterval]) -> float:
    """Each job's wait once: every shard of a job carries the same."""
    waits: dict[str | None, float] = {}
    for shard in shards:
        waits[shard.job] = max(waits.get(shard.job, 0.0), shard.queue_wait_s or 0.0)
    return math.fsum(waits.values())


@dataclass(frozen=True, slots=True)
class GroupUsage:
    """One endpoint (its replicas) or one job (its shards) over the period."""

    kind: WorkloadKind
    name: str
    team: str
    replicas: int
    """Distinct replicas (or shards) seen."""
    reserved: Mapping[str, float]
    """Per replica, the latest reservation: cores, GiB, GPUs."""
    peak: Mapping[str, float]
    """Per replica, the highest use seen: cores, GiB, GPUs."""
    utilization: Mapping[str, float | None]
    """Used over reserved resource-seconds, by resource (``None``: nothing reserved)."""
    cost: float
    waste: float
    saving_at_peak: float
    """What reserving each replica's observed peak, no more, would have saved."""
    idle_share: float
    """Unused share of the reservation, weighted by the reference prices (unit-free)."""
    wasted_reference: float
    """Unused resource-hours at the reference prices: ranks waste where nodes are unpriced."""


def group_usage(
    usage: Sequence[UsageInterval],
    nodes: Sequence[NodeInterval],
    *,
    reference: UnitPrices = REFERENCE_PRICES,
) -> list[GroupUsage]:
    """Endpoints and jobs, those that reserve most and use least first."""
    charges, _, _ = charge(usage, nodes, reference)
    groups: defaultdict[tuple[WorkloadKind, str, str], list[Charge]] = defaultdict(list)
    for c in charges:
        i = c.interval
        name = i.endpoint if i.kind is WorkloadKind.REPLICA else i.job
        groups[i.kind, str(name), i.team].append(c)
    found = [_group_row(key, members, reference) for key, members in groups.items()]
    return sorted(found, key=lambda g: (-g.waste, -g.wasted_reference, g.name))


def _group_row(
    key: tuple[WorkloadKind, str, str], charges: Sequence[Charge], reference: UnitPrices
) -> GroupUsage:
    kind, name, team = key
    peak = [0.0, 0.0, 0.0]
    reserved_s = [0.0, 0.0, 0.0]
    used_s = [0.0, 0.0, 0.0]
    for c in charges:
        peak = [max(a, b) for a, b in zip(peak, _peak_amounts(c.interval), strict=True)]
        seconds = c.interval.seconds
        for d, r in enumerate(_reserved_amounts(c.interval)):
            reserved_s[d] += r * seconds
        for d, u in enumerate(_used_amount_seconds(c.interval)):
            used_s[d] += u
    latest = max(charges, key=lambda c: c.interval.end).interval
    unused = [max(0.0, r - u) for r, u in zip(reserved_s, used_s, strict=True)]
    weight = _weighted(reserved_s, reference)
    members = {(c.interval.version, c.interval.replica, c.interval.shard) for c in charges}
    return GroupUsage(
        kind=kind,
        name=name,
        team=team,
        replicas=len(members),
        reserved=dict(zip(RESOURCES, _reserved_amounts(latest), strict=True)),
        peak=dict(zip(RESOURCES, peak, strict=True)),
        utilization={
            r: (u / s if s > 0 else None)
            for r, s, u in zip(RESOURCES, reserved_s, used_s, strict=True)
        },
        cost=math.fsum(c.total for c in charges),
        waste=math.fsum(w for c in charges for w in c.waste()),
        saving_at_peak=math.fsum(s for c in charges for s in c.saving_at(peak)),
        idle_share=_weighted(unused, reference) / weight if weight > 0 else 0.0,
        wasted_reference=_weighted(unused, reference) / _HOUR_S,
    )

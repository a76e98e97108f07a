"""Cost arithmetic: node prices split over resources, reservations charged as their share
(fractional GPUs as fractions), the identity teams + idle = nodes over any period, waste
and what right-sizing to the peak would save; and the same read from a real store."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from modelplane.observe.cost import (
    REFERENCE_PRICES,
    charge,
    cost_report,
    group_usage,
    unit_prices,
)
from modelplane.observe.usage import (
    NodeInterval,
    UsageInterval,
    WorkloadKind,
    read_nodes,
    read_usage,
    record_nodes,
    record_usage,
)
from modelplane.store.db import open_engine

pytestmark = pytest.mark.timeout(120)

T0 = 1_800_000_000.0
HOUR = 3600.0


def node(
    name: str = "gpu-1",
    *,
    cost: float = 4.0,
    start: float = T0,
    end: float = T0 + HOUR,
    cpu_milli: int = 8000,
    memory_mib: int = 32768,
    gpus: int = 1,
) -> NodeInterval:
    return NodeInterval(
        node=name,
        start=start,
        end=end,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_count=gpus,
        gpu_model="A100" if gpus else None,
        cost_per_hour=cost,
    )


def replica(
    endpoint: str = "fraud-score",
    *,
    team: str = "risk",
    node_name: str = "gpu-1",
    start: float = T0,
    end: float = T0 + HOUR,
    cpu_milli: int = 2000,
    memory_mib: int = 4096,
    gpu: float = 0.0,
    cpu_used: float = 0.0,
    memory_used: float = 0.0,
    gpu_util: float | None = None,
    index: int = 0,
    cpu_peak_milli: float | None = None,
) -> UsageInterval:
    return UsageInterval(
        kind=WorkloadKind.REPLICA,
        team=team,
        node=node_name,
        start=start,
        end=end,
        endpoint=endpoint,
        version=f"{endpoint}:1",
        replica=index,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_fraction=gpu,
        cpu_seconds=cpu_used,
        memory_peak_mib=memory_used,
        memory_mean_mib=memory_used,
        gpu_util=gpu_util,
        cpu_peak_milli=cpu_peak_milli,
    )


def test_a_node_price_splits_over_its_resources_and_adds_up_to_it() -> None:
    gpu_node = node(cost=4.0)
    prices = unit_prices(gpu_node)
    assert math.isclose(8 * prices.cpu + 32 * prices.memory + 1 * prices.gpu, 4.0)
    # the ratios are the reference prices'
    assert math.isclose(prices.gpu / prices.cpu, REFERENCE_PRICES.gpu / REFERENCE_PRICES.cpu)
    free = unit_prices(node(cost=0.0))
    assert (free.cpu, free.memory, free.gpu) == (0.0, 0.0, 0.0)


def test_a_fractional_gpu_is_charged_as_its_fraction() -> None:
    gpu_node = node(cost=4.0, cpu_milli=1000, memory_mib=1024)
    prices = unit_prices(gpu_node)
    quarter = replica(cpu_milli=0, memory_mib=0, gpu=0.25)
    (charged,), nodes_cost, idle = charge([quarter], [gpu_node])
    assert math.isclose(charged.cost[2], 0.25 * prices.gpu)
    assert math.isclose(charged.total, 0.25 * prices.gpu)
    assert math.isclose(idle[2], 0.75 * prices.gpu)
    assert math.isclose(charged.total + sum(idle), nodes_cost)
    assert math.isclose(nodes_cost, 4.0)


def test_teams_and_idle_add_up_to_the_nodes_with_partial_and_oversubscribed_nodes() -> None:
    nodes = [node("gpu-1", cost=4.0), node("cpu-1", cost=0.5, gpus=0, start=T0 + 600)]
    usage = [
        replica(team="risk", gpu=0.5, end=T0 + 1800),
        replica("ranker", team="growth", node_name="cpu-1", cpu_milli=6000, start=T0 + 900),
        # over what cpu-1 has: both are charged their share of its 8 cores, no more
        replica("ranker", team="growth", node_name="cpu-1", cpu_milli=6000, index=1),
        # a node nobody priced: counted, never charged
        replica("stray", team="growth", node_name="laptop", end=T0 + 60),
    ]
    report = cost_report(usage, nodes, T0, T0 + HOUR)
    assert math.isclose(report.nodes_cost, 4.0 + 0.5 * 50 / 60)
    assert math.isclose(report.teams_cost + report.idle_cost, report.nodes_cost)
    growth = next(t for t in report.teams if t.team == "growth")
    assert growth.unpriced_s == 60 + 600  # the stray minute, and ranker#1 before cpu-1 began
    cpu_1 = unit_prices(nodes[1])
    # from T0+900 both rankers want 12 cores of 8: the cores are all charged, none idle
    assert (
        report.idle_by_resource["cpu"] < 8 * cpu_1.cpu * 300 / HOUR + 8 * unit_prices(nodes[0]).cpu
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["risk", "growth", "search"]),
            st.sampled_from(["n1", "n2"]),
            st.integers(0, 3600),
            st.integers(0, 3600),
            st.integers(0, 16000),
            st.integers(0, 65536),
            st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 2.0]),
        ),
        max_size=25,
    ),
    st.integers(0, 3600),
    st.integers(0, 3600),
)
def test_the_identity_holds_for_any_intervals_and_period(
    raw: list[tuple[str, str, int, int, int, int, float]], p: int, q: int
) -> None:
    nodes = [node("n1", cost=3.0, gpus=2), node("n2", cost=0.7, gpus=0, start=T0 + 100)]
    usage = [
        replica(
            team=team,
            node_name=where,
            start=T0 + min(a, b),
            end=T0 + max(a, b),
            cpu_milli=cpu,
            memory_mib=mem,
            gpu=gpu,
            index=k,
        )
        for k, (team, where, a, b, cpu, mem, gpu) in enumerate(raw)
    ]
    since, until = T0 + min(p, q), T0 + max(p, q)
    clipped = [c for i in usage if (c := i.clipped(since, until)) is not None]
    offered = [o for n in nodes if (o := n.clipped(since, until)) is not None]
    report = cost_report(clipped, offered, since, until)
    expected = math.fsum(n.cost_per_hour * n.seconds / HOUR for n in offered)
    assert math.isclose(report.nodes_cost, expected, rel_tol=1e-9, abs_tol=1e-12)
    total = report.teams_cost + report.idle_cost
    assert math.isclose(total, report.nodes_cost, rel_tol=1e-9, abs_tol=1e-12)
    assert report.idle_cost >= 0
    assert all(t.cost >= 0 for t in report.teams)


def test_waste_idle_share_and_the_saving_of_reserving_the_peak() -> None:
    prices = unit_prices(node())
    # reserves 4 cores and 8 GiB, uses 1 core on average (peak 2) and 2 GiB
    greedy = replica(
        "greedy",
        cpu_milli=4000,
        memory_mib=8192,
        cpu_used=HOUR,
        memory_used=2048,
        cpu_peak_milli=2000,
    )
    snug = replica(
        "snug",
        cpu_milli=1000,
        memory_mib=1024,
        cpu_used=0.9 * HOUR,
        memory_used=1000,
        team="growth",
    )
    rows = group_usage([greedy, snug], [node()])
    assert [g.name for g in rows] == ["greedy", "snug"]
    top = rows[0]
    assert top.reserved == {"cpu": 4.0, "memory": 8.0, "gpu": 0.0}
    assert top.peak == {"cpu": 2.0, "memory": 2.0, "gpu": 0.0}
    assert top.utilization == {"cpu": 0.25, "memory": 0.25, "gpu": None}
    assert math.isclose(top.cost, 4 * prices.cpu + 8 * prices.memory)
    assert math.isclose(top.waste, 3 * prices.cpu + 6 * prices.memory)
    assert math.isclose(top.saving_at_peak, 2 * prices.cpu + 6 * prices.memory)
    assert math.isclose(top.idle_share, 0.75)
    report = cost_report([greedy, snug], [node()], T0, T0 + HOUR, teams=["risk"])
    (risk,) = report.teams
    assert risk.reserved == {"cpu": 4 * HOUR, "memory": 8 * HOUR, "gpu": 0.0}
    assert risk.used == {"cpu": HOUR, "memory": 2 * HOUR, "gpu": 0.0}
    assert math.isclose(risk.waste, top.waste)
    # narrowing to a team leaves the nodes' cost and idle whole
    assert math.isclose(report.nodes_cost, 4.0)


def test_jobs_and_serving_are_summed_together_with_queue_wait() -> None:
    shard = UsageInterval(
        kind=WorkloadKind.SHARD,
        team="risk",
        tier="batch",
        node="gpu-1",
        start=T0,
        end=T0 + 600,
        job="score-q3",
        shard=0,
        cpu_milli=1000,
        memory_mib=1024,
        gpu_fraction=0.5,
        gpu_util=0.25,
        queue_wait_s=30.0,
        memory_peak_mib=512,
    )
    again = UsageInterval(
        kind=WorkloadKind.SHARD,
        team="risk",
        tier="batch",
        node="gpu-1",
        start=T0 + 600,
        end=T0 + 700,
        job="score-q3",
        shard=1,
        cpu_milli=1000,
        memory_mib=1024,
        queue_wait_s=30.0,
        memory_peak_mib=256,
    )
    report = cost_report([replica(), shard, again], [node()], T0, T0 + HOUR)
    (risk,) = report.teams
    assert math.isclose(risk.cost, risk.serving_cost + risk.jobs_cost)
    assert risk.jobs_cost > 0
    assert risk.serving_cost > 0
    # both shards carry their job's wait: counted once
    assert (risk.jobs, risk.shards, risk.queue_wait_s) == (1, 2, 30.0)
    # no mean memory reported: the peak counts as used
    assert risk.used["memory"] == pytest.approx(0.0 + 0.5 * 600 + 0.25 * 100)
    assert risk.used["gpu"] == 0.25 * 600  # a quarter of a device kept busy
    job = next(g for g in group_usage([shard, again], [node()]) if g.kind is WorkloadKind.SHARD)
    assert (job.name, job.replicas, job.utilization["gpu"]) == ("score-q3", 2, 0.5)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def test_a_report_from_the_store_keeps_the_identity_across_a_period_edge(engine: Engine) -> None:
    minute = 60.0
    record_nodes(
        engine, *(node(start=T0 + k * minute, end=T0 + (k + 1) * minute) for k in range(30))
    )
    record_usage(
        engine,
        *(
            replica(start=T0 + k * minute, end=T0 + (k + 1) * minute, cpu_used=30.0, gpu=0.5)
            for k in range(30)
        ),
        replica("ranker", team="growth", start=T0 + 300, end=T0 + 1200, cpu_milli=500),
    )
    since, until = T0 + 90, T0 + 1000  # both edges cut an interval
    report = cost_report(
        read_usage(engine, since, until), read_nodes(engine, since, until), since, until
    )
    assert math.isclose(report.nodes_cost, 4.0 * (until - since) / HOUR)
    assert math.isclose(report.teams_cost + report.idle_cost, report.nodes_cost)
    risk = next(t for t in report.teams if t.team == "risk")
    assert math.isclose(risk.used["cpu"], 0.5 * (until - since))
    assert math.isclose(risk.reserved["gpu"], 0.5 * (until - since))

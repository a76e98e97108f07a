"""Report documents: periods parsed with errors naming the field, cost and usage documents
read from the store, and docs/usage.md's example run as written (its Python records, its
shell commands report)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit import cli, home_env

from modelplane.errors import InvalidSpec
from modelplane.observe.cost import unit_prices
from modelplane.observe.usage import NodeInterval, UsageInterval, WorkloadKind, record_period
from modelplane.observe.usage_report import (
    Period,
    cost_document,
    parse_period,
    usage_document,
)
from modelplane.store.db import open_engine

pytestmark = pytest.mark.timeout(120)

DOC = Path(__file__).parents[2] / "docs" / "usage.md"
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400)],
)
def test_periods_end_now(text: str, seconds: float) -> None:
    assert parse_period(text, NOW) == Period(NOW - seconds, NOW)


@pytest.mark.parametrize("text", ["7", "seven days", "-1d", "0h", "500d", ""])
def test_a_bad_period_names_its_field(text: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_period(text, NOW, field="since")
    assert caught.value.details[0]["field"] == "since"
    assert str(caught.value).startswith("since:")


def test_documents_from_the_store(database_url: str) -> None:
    engine = open_engine(database_url)
    node = NodeInterval(
        node="n1", start=NOW - 3600, end=NOW, cpu_milli=8000, memory_mib=16384, cost_per_hour=1.0
    )
    replica = UsageInterval(
        kind=WorkloadKind.REPLICA,
        team="risk",
        node="n1",
        start=NOW - 3600,
        end=NOW,
        endpoint="fraud-score",
        cpu_milli=4000,
        memory_mib=8192,
        cpu_seconds=360.0,
        memory_peak_mib=512,
        memory_mean_mib=400,
    )
    record_period(engine, [replica], [node])
    cost = cost_document(engine, Period(NOW - 7200, NOW), teams=["risk"])
    prices = unit_prices(node)
    assert cost["teams"][0]["cost"] == pytest.approx(4 * prices.cpu + 8 * prices.memory)
    assert cost["teams"][0]["reserved_hours"] == {"cpu": 4.0, "memory": 8.0, "gpu": 0.0}
    assert cost["teams"][0]["used_hours"]["cpu"] == pytest.approx(0.1)
    assert cost["nodes_cost"] == pytest.approx(1.0)
    assert cost["unaccounted"] == pytest.approx(0.0, abs=1e-9)
    assert cost_document(engine, Period(NOW - 7200, NOW), teams=["growth"])["teams"] == []
    usage = usage_document(engine, Period(NOW - 7200, NOW), top=1)
    assert usage["reserve_most_use_least"] == ["fraud-score"]
    assert usage["groups"][0]["utilization"]["cpu"] == pytest.approx(0.025)
    with pytest.raises(InvalidSpec, match="top"):
        usage_document(engine, Period(NOW - 7200, NOW), top=-1)
    engine.dispose()


def test_the_guide_example_runs_as_written(tmp_path: Path) -> None:
    text = DOC.read_text()
    (python,) = re.findall(r"```python\n(.*?)```", text, re.S)
    shell = [
        line
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
        for line in block.strip().splitlines()
    ]
    env = home_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    subprocess.run([sys.executable, "-c", python], env=env, check=True, timeout=60)
    printed = []
    for line in shell:
        args = line.split()[1:]  # the words after "modelplane"
        args = [str(tmp_path / a) if a.endswith(".png") else a for a in args]
        printed.append(cli(env, *args))
    table, as_json, usage = printed
    assert "risk" in table
    assert "growth" in table
    assert "= nodes 2.50" in table
    risk = json.loads(as_json)
    prices = unit_prices(
        NodeInterval(
            node="gpu-1",
            start=0,
            end=1,
            cpu_milli=16000,
            memory_mib=65536,
            gpu_count=1,
            cost_per_hour=2.5,
        )
    )
    (row,) = risk["teams"]
    assert row["team"] == "risk"
    assert row["cost"] == pytest.approx(4 * prices.cpu + 8 * prices.memory, rel=1e-3)
    assert risk["nodes_cost"] == pytest.approx(2.5, rel=1e-3)
    assert "reserve most, use least: fraud-score" in usage
    assert (tmp_path / "usage.png").is_file()
    assert os.path.getsize(tmp_path / "usage.png") > 1000


def test_a_team_filter_leaves_each_share_as_it_is(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    node = NodeInterval(
        node="n1", start=NOW - 3600, end=NOW, cpu_milli=8000, memory_mib=16384, cost_per_hour=1.0
    )
    # 10 cores asked of 8: each is charged its share of the 8, whoever reads the report
    asks = [("risk", "fraud-score", 4000), ("growth", "ranker", 6000)]
    usage = [
        UsageInterval(
            kind=WorkloadKind.REPLICA, team=team, node="n1", start=NOW - 3600, end=NOW,
            endpoint=endpoint, cpu_milli=cpu, memory_mib=1024,
        )
        for team, endpoint, cpu in asks
    ]  # fmt: skip
    record_period(engine, usage, [node])
    period = Period(NOW - 3600, NOW)
    everyone = {g["name"]: g["cost"] for g in usage_document(engine, period)["groups"]}
    (risk,) = usage_document(engine, period, teams=["risk"])["groups"]
    assert risk["cost"] == everyone["fraud-score"]
    (risk_cost,) = cost_document(engine, period, teams=["risk"])["teams"]
    assert risk_cost["cost"] == everyone["fraud-score"]
    engine.dispose()

"""``modelplane report cost|usage`` as a user runs them: a real ``up`` serving an endpoint
whose manifest asks for far more CPU and memory than it uses, beside one sized to fit; the
usage report names the over-reserved one, the cost report adds up, the plot is a PNG, a bad
``--since`` is refused naming it, and the same documents come through the control API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.kit import cli, home_env, running_up, wait_for
from tests.kit.fraud import ENDPOINT_TEMPLATE

from modelplane.registry.build import package
from modelplane.spec.manifest import Resources

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(240)

CLUSTER = "kind: Cluster\nlocal: {cost_per_hour: 2.0}\n"


def push(env: dict[str, str], tmp_path: Path, name: str, resources: Resources) -> None:
    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(40, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    built = package(model, name=name, output_dir=tmp_path / name, sample_input=frame.head(),
                    resources=resources)  # fmt: skip
    cli(env, "push", str(built.path))


def serve(env: dict[str, str], tmp_path: Path, name: str, team: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(ENDPOINT_TEMPLATE.format(name=name, team=team, model=f"{name}:1"))
    cli(env, "apply", "-f", str(path))


def predicted(url: str, endpoint: str) -> bool:
    body = {"instances": [{"a": 0.5, "b": -1.0}]}
    try:
        response = httpx.post(f"{url}/v1/endpoints/{endpoint}:predict", json=body, timeout=5)
    except httpx.TransportError:
        return False
    return response.status_code == 200


def usage_json(env: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cli(env, "report", "usage", "--since", "1h", "--json"))
    return found


def test_the_usage_report_names_the_over_reserved_endpoint(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cluster.yaml").write_text(CLUSTER)
    env = {**home_env(home), "MODELPLANE_USAGE_SAMPLE_S": "0.25", "MODELPLANE_USAGE_FLUSH_S": "1"}
    # asks for 4 cores and 6 GiB; a logistic regression uses a sliver of a core and ~100 MiB
    push(env, tmp_path, "bloated", Resources(cpu=4.0, memory_mb=6144))
    push(env, tmp_path, "snug", Resources(cpu=0.05, memory_mb=160))
    with running_up(env) as up:
        serve(env, tmp_path, "bloated", "risk")
        serve(env, tmp_path, "snug", "growth")
        wait_for(lambda: predicted(up.url, "bloated"), 120, "bloated to answer")
        wait_for(lambda: predicted(up.url, "snug"), 120, "snug to answer")

        def sampled() -> dict[str, Any] | None:
            document = usage_json(env)
            names = {g["name"]: g for g in document["groups"]}
            both = all(n in names and names[n]["peak"]["memory"] > 0 for n in ("bloated", "snug"))
            # The first second of a replica is its start-up, a burst of CPU on a busy
            # machine; the finding needs intervals past it, so the report is polled.
            return document if both and document["reserve_most_use_least"] else None

        document = wait_for(sampled, 90, "usage intervals of both endpoints, a finding")
        table = cli(env, "report", "usage", "--since", "1h", "--plot", str(tmp_path / "u.png"))
        cost = json.loads(cli(env, "report", "cost", "--since", "1h", "--json"))
        cost_table = cli(env, "report", "cost", "--since", "1h", "--team", "risk")
        cli(env, "report", "cost", "--since", "forever", expect=2)  # invalid_spec
        remote = tmp_path / "laptop"
        remote.mkdir()
        laptop = home_env(remote)
        token = (home / "token").read_text().strip()
        cli(laptop, "login", up.api_url, "--token", token)
        through_api = json.loads(cli(laptop, "report", "cost", "--since", "1h", "--json"))
        usage_through_api = json.loads(
            cli(laptop, "report", "usage", "--since", "1h", "--team", "risk", "--json")
        )

    worst = document["groups"][0]
    assert worst["name"] == "bloated"
    assert document["reserve_most_use_least"] == ["bloated"]
    assert worst["reserved"]["cpu"] == 4.0
    assert worst["reserved"]["memory"] == 6.0
    assert worst["peak"]["cpu"] < 2.0
    assert worst["peak"]["memory"] < 3.0
    assert worst["saving_at_peak"] > 0
    assert worst["idle_share"] > 0.5
    assert "reserve most, use least: bloated" in table
    assert (tmp_path / "u.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    teams = {t["team"]: t for t in cost["teams"]}
    assert set(teams) == {"risk", "growth"}
    assert teams["risk"]["cost"] > teams["growth"]["cost"] > 0
    assert teams["risk"]["reserved_hours"]["cpu"] > teams["risk"]["used_hours"]["cpu"]
    assert cost["nodes_cost"] > 0
    assert cost["teams_cost"] + cost["idle_cost"] == pytest.approx(cost["nodes_cost"], abs=1e-5)
    assert abs(cost["unaccounted"]) < 1e-5
    assert "risk" in cost_table
    assert "growth" not in cost_table.split("teams ")[0]
    assert "= nodes" in cost_table

    assert {t["team"] for t in through_api["teams"]} == {"risk", "growth"}
    assert through_api["nodes_cost"] >= cost["nodes_cost"]  # the same store, read later
    assert [g["name"] for g in usage_through_api["groups"]] == ["bloated"]


def test_reports_with_nothing_recorded_say_what_records_it(tmp_path: Path) -> None:
    env = home_env(tmp_path / "home")
    assert "nothing recorded since 7d: `modelplane up` records" in cli(env, "report", "cost")
    shown = cli(env, "report", "usage", "--team", "risk", "--since", "2d")
    assert "nothing recorded for team risk since 2d" in shown
    assert json.loads(cli(env, "report", "cost", "--json"))["teams"] == []


def test_reports_on_unpriced_nodes_say_where_prices_come_from(tmp_path: Path) -> None:
    """A first `up` has no cluster.yaml: its usage is recorded, every cost reads 0, and the
    reports say which setting gives them a price instead of leaving a newcomer to guess."""
    import time

    from modelplane.observe.usage import NodeInterval, UsageInterval, WorkloadKind, record_period
    from modelplane.store.db import open_engine

    home = tmp_path / "home"
    env = home_env(home)
    cli(env, "status")  # a fresh state store, as any first command makes it
    now = time.time()
    replica = UsageInterval(
        kind=WorkloadKind.REPLICA, team="risk", node="local", start=now - 600, end=now,
        endpoint="fraud", version="fraud:1", replica=0, cpu_milli=1000, memory_mib=512,
        cpu_seconds=30.0, cpu_peak_milli=200.0, memory_peak_mib=150.0, samples=10,
    )  # fmt: skip
    offered = NodeInterval(
        node="local", start=now - 600, end=now, cpu_milli=2000, memory_mib=4096,
        gpu_count=0, gpu_model=None, cost_per_hour=0.0,
    )  # fmt: skip
    engine = open_engine(f"sqlite:///{home / 'state.db'}")
    record_period(engine, [replica], [offered])
    engine.dispose()
    for report in ("cost", "usage"):
        out = cli(env, "report", report, "--since", "1h")
        assert "fraud" in out or "risk" in out
        assert "no node had a price" in " ".join(out.split()), out
        assert "docs/usage.md#prices" in " ".join(out.split())

"""Feature sets through the CLI: apply, push, materialize, get; on SQLite and Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app

FEATURE_SET = """
kind: FeatureSet
name: customer
version: {version}
team: risk
entity: {{name: customer_id, dtype: string}}
features:
  - {{name: spend_7d, dtype: float64, default: 0.0}}
  - {{name: orders_7d, dtype: int64{extra}}}
freshness: {{max_age_s: 3600}}
"""


@pytest.fixture(params=["sqlite", "redis"])
def workdir(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path / "home"))
    if request.param == "redis":
        monkeypatch.setenv("MODELPLANE_FEATURE_STORE_URL", request.getfixturevalue("redis_url"))
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def write_set(path: Path, version: int, extra: str = "") -> Path:
    path.write_text(FEATURE_SET.format(version=version, extra=extra))
    return path


def test_apply_push_get_materialize(workdir: Path) -> None:
    assert "created" in run("apply", "-f", str(write_set(workdir / "fs.yaml", 1)))
    now = time.time()
    rows = [
        {"key": "c1", "event_time": now - 10, "values": {"spend_7d": 12.5, "orders_7d": 3}},
        {"key": "c2", "event_time": now - 7200, "values": {"spend_7d": 1.0, "orders_7d": 1}},
    ]
    (workdir / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert "2 written" in run("features", "push", "customer", "-f", "rows.jsonl")
    older = [{"key": "c1", "event_time": now - 100, "values": {"spend_7d": 0.0, "orders_7d": 0}}]
    (workdir / "older.jsonl").write_text(json.dumps(older[0]))
    assert "1 older" in run("features", "push", "customer:1", "-f", "older.jsonl")
    found = json.loads(run("features", "get", "customer", "c1", "c2", "c3", "--json"))
    assert found[0]["values"] == {"spend_7d": 12.5, "orders_7d": 3}
    assert found[2]["missing"] == ["spend_7d", "orders_7d"]
    text = run("features", "get", "customer", "c1", "c2")
    assert "fresh" in text
    assert "stale" in text

    (workdir / "backfill.csv").write_text(
        "customer_id,event_time,spend_7d,orders_7d\n"
        + "".join(f"b{i},{now},{i}.5,{i}\n" for i in range(25))
    )
    out = run("features", "materialize", "customer", "--from", "backfill.csv", "--batch-rows", "10")
    assert "25 rows" in out
    got = json.loads(run("features", "get", "customer", "b7", "--json"))
    assert got[0]["values"] == {"spend_7d": 7.5, "orders_7d": 7}


def test_versions_are_immutable(workdir: Path) -> None:
    run("apply", "-f", str(write_set(workdir / "v1.yaml", 1)))
    # changing a feature's dtype under the same version breaks readers of that version
    narrowed = FEATURE_SET.format(version=1, extra="").replace(
        "orders_7d, dtype: int64", "orders_7d, dtype: int8"
    )
    (workdir / "bad.yaml").write_text(narrowed)
    assert "publish version 2" in run("apply", "-f", "bad.yaml", code=3)
    run("apply", "-f", str(write_set(workdir / "v2.yaml", 2, ", default: 0")))
    listed = json.loads(run("get", "featuresets", "--json"))
    assert [r["name"] for r in listed] == ["customer:1", "customer:2"]
    out = run("features", "push", "nope", "-f", str(workdir / "v1.yaml"), code=6)
    assert "apply it first" in out

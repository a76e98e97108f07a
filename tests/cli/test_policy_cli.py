"""``modelplane nodes | why | policy diff | policy history`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.registry.build import package
from modelplane.registry.service import open_registry
from modelplane.spec.manifest import Resources
from modelplane.store.resources import ResourceStore

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(120)

POLICY = """
kind: Policy
teams:
  - name: fraud
    quotas: {{gpu: {{nominal: {gpu}}}, cpu: {{nominal: {cpu}, borrowing_limit: 0}}}}
  - name: {other}
"""

ENDPOINT = """
kind: Endpoint
name: {name}
team: fraud
tier: {tier}
replicas: {replicas}
contract:
  name: {name}
  inputs: [{{name: a, dtype: float64}}, {{name: b, dtype: float64}}]
routes: [{{model: fraud@champion}}]
"""

CLUSTER = """
kind: Cluster
local: {detect: false}
nodes:
  - {name: small, cpu_milli: 3000, memory_mib: 8192, cost_per_hour: 0.5}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_nodes_lists_this_machine_and_declared_ones(home: Path) -> None:
    [local] = json.loads(run("nodes", "--json"))
    assert local["labels"]["modelplane.io/local"] == "true"
    assert local["cpu_milli"] >= 1
    (home / "home").mkdir()
    write(home / "home" / "cluster.yaml", CLUSTER.replace("detect: false", "cost_per_hour: 1"))
    names = [n["name"] for n in json.loads(run("nodes", "--json"))]
    assert names == [local["name"], "small"]
    assert "small" in run("nodes")
    run("nodes", "--cluster", "missing.yaml", code=2)


def test_policy_diff_against_a_file_and_between_generations(home: Path) -> None:
    first = write(home / "p1.yaml", POLICY.format(gpu=4000, cpu=8000, other="ads"))
    second = write(home / "p2.yaml", POLICY.format(gpu=8000, cpu=8000, other="search"))
    run("policy", "diff", first, code=6)  # nothing applied yet
    run("apply", "-f", first)
    assert "no changes" in run("policy", "diff", first)
    out = run("policy", "diff", second, code=1)
    assert "~ teams.fraud.quotas.gpu.nominal: 4000 -> 8000" in out
    assert "- teams.ads:" in out
    assert "+ teams.search:" in out
    run("apply", "-f", second, "--reason", "more gpu")
    assert run("policy", "diff", code=1) == run(
        "policy", "diff", "--from", "1", "--to", "2", code=1
    )
    report = json.loads(run("policy", "diff", "--from", "2", "--to", "1", "--json", code=1))
    assert not report["equal"]
    assert {"path": "teams.fraud.quotas.gpu.nominal", "op": "changed", "before": 8000,
            "after": 4000} in report["changes"]  # fmt: skip
    assert json.loads(run("policy", "diff", "--from", "2", "--json"))["equal"]
    run("policy", "diff", "--from", "7", code=6)
    rows = json.loads(run("policy", "history", "--json"))
    assert [(r["generation"], r["reason"], r["changes"]) for r in rows] == [
        (1, "", 0),
        (2, "more gpu", 3),
    ]


def test_why_places_replicas_or_says_why_they_wait(home: Path) -> None:
    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(20, 2)), columns=["a", "b"])
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=home / "pkg", sample_input=frame.head(),
                    resources=Resources(cpu=1.0, memory_mb=1024))  # fmt: skip
    run("push", str(built.path), "--alias", "champion")
    cluster = write(home / "cluster.yaml", CLUSTER)
    run("apply", "-f", write(home / "p.yaml", POLICY.format(gpu=0, cpu=8000, other="ads")))
    crit = ENDPOINT.format(name="pay", tier="critical", replicas=2)
    batch = ENDPOINT.format(name="score", tier="batch", replicas=2)
    run("apply", "-f", write(home / "e1.yaml", crit), "-f", write(home / "e2.yaml", batch))
    assert (
        run("why", "pay", "--cluster", cluster).strip() == "pay: 2 replica(s) placed on small (2)"
    )
    line = run("why", "score", "--cluster", cluster).strip()
    assert line.startswith("score/fraud@champion/1 is pending: no node fits (1 nodes: 1 lack cpu)")
    assert line.endswith("(1 of 2 replicas wait)")
    one = run("why", "score/fraud@champion/0", "--cluster", cluster).strip()
    assert one.startswith("score/fraud@champion/0 is placed on small by most-allocated")
    details = json.loads(run("why", "score", "--cluster", cluster, "--json"))
    assert details["workloads"][0]["demand"]["cpu_milli"] == 1000
    assert details["nodes"] == ["small"]
    run("why", "nothing", "--cluster", cluster, code=6)
    registry = open_registry(
        f"sqlite:///{home}/home/state.db", str(home / "home" / "artifacts"), actor="t"
    )
    ready = {"type": "Ready", "status": "True", "reason": "Serving"}
    ResourceStore(registry.engine).set_status("Endpoint", "pay", {"conditions": [ready]})
    registry.close()
    assert run("why", "pay", "--cluster", cluster).strip().endswith("; endpoint Ready: Serving")


def test_one_policy_is_in_force_and_diff_compares_with_it(home: Path) -> None:
    named = POLICY.format(gpu=4000, cpu=8000, other="ads") + "name: prod\n"
    run("apply", "-f", write(home / "prod.yaml", named))
    # a second policy under another name is refused, naming the one in force
    out = run("apply", "-f", write(home / "other.yaml", POLICY.format(gpu=1, cpu=1, other="x")),
              code=7)  # fmt: skip
    assert "policy 'prod' is already applied" in out
    # diff FILE compares with the policy in force, not one called 'default'
    changed = named.replace("nominal: 4000", "nominal: 8000")
    out = run("policy", "diff", write(home / "prod2.yaml", changed), code=1)
    assert "policy/prod generation 1" in out
    assert "~ teams.fraud.quotas.gpu.nominal: 4000 -> 8000" in out
    assert "policies" in run("get", "policies")


def test_apply_of_an_empty_file_says_so(home: Path) -> None:
    out = run("apply", "-f", write(home / "empty.yaml", "# nothing yet\n"), code=2)
    assert "no documents" in out

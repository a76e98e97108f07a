"""Outcomes end to end through ``modelplane up``: callers send feedback for what they were
answered; a version made worse on purpose is rolled back by the ``outcome`` gate
(``examples/rollout-outcome.yaml``), shows as a regression in ``modelplane outcomes`` and
``modelplane status``; a Parquet import of business outcomes joins the same answers."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from tests.kit import cli, home_env, running_up, wait_for
from tests.observe.test_outcomes import answer
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.observe.outcomes import OutcomeStore
from modelplane.observe.predlog import write_requests
from modelplane.observe.status import read_status
from modelplane.registry.build import package
from modelplane.registry.service import open_registry
from modelplane.store.db import open_engine
from modelplane.store.resources import ResourceStore

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(240)

EXAMPLES = Path(__file__).parents[2] / "examples"
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]


def frame(n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "amount": rng.gamma(2.0, 40.0, n), "age_days": rng.uniform(0, 2000, n),
        "merchant_risk": rng.beta(2, 5, n), "night": rng.integers(0, 2, n).astype(float),
    })  # fmt: skip


def truth(rows: Any) -> Any:
    return (rows.merchant_risk + 0.2 * rows.night > 0.4).astype(int)


class Callers(threading.Thread):
    """Closed-loop callers that learn the truth at once and send it back as feedback."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, threading.Event()
        self.answered: list[tuple[str, str]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        rows = frame(5000, 9)
        labels = truth(rows)
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for i in range(len(rows)):
                if self.stop.is_set():
                    return
                request_id = f"call-{i}"
                record = {c: float(rows[c].iloc[i]) for c in COLUMNS}
                answer = http.post("/v1/endpoints/fraud-score:predict",
                                   json={"instances": [record]},
                                   headers={"x-request-id": request_id})  # fmt: skip
                label = {"request_id": request_id, "label": int(labels[i])}
                feedback = http.post("/v1/endpoints/fraud-score:feedback", json=label)
                if answer.status_code != 200 or feedback.status_code != 200:
                    self.failures.append(f"{answer.status_code} {feedback.status_code}")
                version = answer.headers.get("modelplane-model-version", "")
                self.answered.append((request_id, version))


def phase(home: Path) -> str | None:
    """The rollout's phase, read from the store (a CLI process per poll costs seconds on a
    busy machine; the assertions below go through the CLI)."""
    rows = [r for r in read_status(f"sqlite:///{home / 'state.db'}")["endpoints"] if r["rollout"]]
    return str(rows[0]["rollout"]["phase"]) if rows else None


def alerting(home: Path) -> bool:
    [endpoint] = read_status(f"sqlite:///{home / 'state.db'}")["endpoints"]
    alerts = (endpoint.get("outcomes") or {}).get("alerts", [])
    return any("fraud:2 is worse than" in line for line in alerts)


def test_a_worse_version_is_rolled_back_by_its_outcomes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    train = frame(400, 7)
    target = truth(train)
    # fraud:2 is made worse on purpose: trained on the opposite of the truth
    for version, y in ((1, target), (2, 1 - target)):
        model = LogisticRegression(max_iter=500).fit(train[COLUMNS], y)
        built = package(model, name="fraud", output_dir=tmp_path / f"v{version}",
                        sample_input=train[COLUMNS].head())  # fmt: skip
        cli(env, "push", str(built.path))
    callers = None
    with running_up(env) as up:
        try:
            cli(env, "apply", "-f", str(EXAMPLES / "endpoint.yaml"))
            wait_for(lambda: _serves(up.url), 90, "the endpoint")
            callers = Callers(up.url)
            callers.start()
            cli(env, "rollout", "fraud-score", "-f", str(EXAMPLES / "rollout-outcome.yaml"))
            wait_for(lambda: phase(home) in ("rolled_back", "promoted", "failed"), 120,
                     "the outcome gate to decide")  # fmt: skip
            assert phase(home) == "rolled_back"
            callers.stop.set()
            callers.join(timeout=30)
            wait_for(lambda: alerting(home), 60, "the outcome recorder to see the regression")
            status = cli(env, "status")
        finally:
            if callers is not None:
                callers.stop.set()
                callers.join(timeout=30)
        decisions = json.loads(cli(env, "audit", "log", "--action", "rollout.decision", "--json"))
        failed = [g for d in decisions for g in (d["after"] or {}).get("gates", [])
                  if g["name"] == "outcome" and g["outcome"] == "fail"]  # fmt: skip
        assert failed, decisions
        assert failed[0]["reading"]["candidate_labels"] >= 50
        assert "worse by at least" in failed[0]["reason"]

        # business outcomes for answers already given, from a Parquet file
        ids = [request_id for request_id, _ in callers.answered[:20]]
        labels_file = tmp_path / "revenue.parquet"
        pq.write_table(pa.table({"request_id": ids, "revenue": [2.5] * len(ids)}), labels_file)
        imported = cli(env, "feedback", "import", str(labels_file), "--endpoint", "fraud-score")
        assert "stored 20 outcomes (0 labels, 20 values) for fraud-score" in imported
    assert not callers.failures, callers.failures[:5]
    assert "OUTCOME ALERT fraud:2 is worse than fraud:1 on auc" in status
    report = json.loads(cli(env, "outcomes", "fraud-score", "--json"))
    [comparison] = report["comparisons"]
    assert (comparison["baseline"], comparison["candidate"]) == ("fraud:1", "fraud:2")
    assert comparison["regressed"]
    by_version = {v["version"]: v for v in report["versions"]}
    assert by_version["fraud:1"]["metrics"]["auc"] > 0.9
    assert by_version["fraud:2"]["metrics"]["auc"] < 0.1
    revenue = sum(v["business"].get("revenue", {}).get("sum", 0.0) for v in report["versions"])
    assert revenue == 50.0
    text = cli(env, "outcomes", "fraud-score")
    assert "REGRESSION" in text


def _serves(url: str) -> bool:
    record = {"amount": 10.0, "age_days": 3.0, "merchant_risk": 0.5, "night": 1.0}
    try:
        response = httpx.post(f"{url}/v1/endpoints/fraud-score:predict",
                              json={"instances": [record]}, timeout=5)  # fmt: skip
    except httpx.TransportError:
        return False
    return response.status_code == 200


def test_the_docs_show_the_example_the_test_runs() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "outcomes.md").read_text()
    shown = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    example = (EXAMPLES / "rollout-outcome.yaml").read_text()
    shipped = "".join(line + "\n" for line in example.splitlines() if not line.startswith("#"))
    assert shown == shipped


def run(home: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--home", str(home), *args])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A store where fraud-score is declared (no answers kept yet)."""
    home = tmp_path / "home"
    registry = open_registry(f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="t")
    ResourceStore(registry.engine).apply("Endpoint", "fraud-score", {"name": "fraud-score"},
                                         actor="t")  # fmt: skip
    registry.close()
    return home


def test_a_bad_import_says_why_and_stores_nothing(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"request_id": ["a", "b"], "label": ["yes", "no"]}), bad)
    numbered = tmp_path / "numbered.parquet"
    pq.write_table(pa.table({"request_id": [1, 2], "label": [1, 0]}), numbered)
    for path, problem in (
        (bad, "rows[0].label"),
        (tmp_path / "nope.parquet", "nope.parquet does not exist"),
        (numbered, "column request_id is int64; request ids are strings"),
    ):
        done = run(home, "feedback", "import", str(path), "--endpoint", "fraud-score")
        assert done.exit_code == 2, done.output
        assert problem in done.output
    report = json.loads(run(home, "outcomes", "fraud-score", "--json").output)
    assert report["versions"] == []
    # a declared endpoint with no answers yet is not an error
    done = run(home, "outcomes", "fraud-score")
    assert (done.exit_code, done.output.strip()) == (0, "fraud-score: no answers kept yet")


def test_an_unknown_endpoint_is_refused_naming_it(home: Path, tmp_path: Path) -> None:
    """``--endpoint nope`` stored the labels under a name nothing answers (exit 0)."""
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["a", "b"], "label": [1, 0]}), labels)
    for args in (("feedback", "import", str(labels), "--endpoint", "nope"),
                 ("outcomes", "nope"), ("outcomes", "nope", "--json")):  # fmt: skip
        done = run(home, *args)
        assert done.exit_code == 2, done.output
        assert "endpoint: no endpoint 'nope' (endpoints: fraud-score)" in done.output
    engine = open_engine(f"sqlite:///{home}/state.db")
    try:
        assert OutcomeStore(engine).arrival("nope")[0] == 0
    finally:
        engine.dispose()


def test_an_import_counts_rows_as_outcomes(home: Path, tmp_path: Path) -> None:
    """A 2-row file of labels and a value said "stored 4 outcomes"."""
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["a", "b"], "label": [1, 0],
                             "chargeback_usd": [12.5, 0.0]}), labels)  # fmt: skip
    done = run(home, "feedback", "import", str(labels), "--endpoint", "fraud-score")
    assert done.exit_code == 0, done.output
    assert "stored 2 outcomes (2 labels, 2 values) for fraud-score" in done.output
    as_json = run(home, "feedback", "import", str(labels), "--endpoint", "fraud-score", "--json")
    found = json.loads(as_json.output)
    assert {k: found[k] for k in ("endpoint", "outcomes", "labels", "values")} == {
        "endpoint": "fraud-score", "outcomes": 2, "labels": 2, "values": 2}  # fmt: skip


def test_an_endpoint_deleted_since_keeps_its_outcomes(home: Path) -> None:
    """Answers outlive their endpoint (90 days): their report still reads."""
    engine = open_engine(f"sqlite:///{home}/state.db")
    try:
        write_requests(engine, [dataclasses.replace(answer("b", "old:1", [0.8]),
                                                    endpoint="retired")])  # fmt: skip
    finally:
        engine.dispose()
    done = run(home, "outcomes", "retired", "--json")
    assert done.exit_code == 0, done.output
    assert [v["version"] for v in json.loads(done.output)["versions"]] == ["old:1"]

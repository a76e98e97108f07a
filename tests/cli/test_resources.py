"""``modelplane apply -f`` as a user runs it: a Job gets every check ``jobs submit`` gives
it, and a job's or endpoint's team and tier must be ones the policy in force knows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.kit.jobs import build_model, frame_of, job_doc, write_parquet
from typer.testing import CliRunner

from modelplane.backends.jobs.plan import write_success
from modelplane.cli.main import app
from modelplane.spec.job import OutputData

pytestmark = pytest.mark.timeout(180)

POLICY = {
    "kind": "Policy",
    "admit_unknown_teams": False,
    "teams": [{"name": "risk"}, {"name": "web"}],
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    folder, _ = build_model(tmp_path / "pkg")
    run("push", str(folder), "--alias", "champion", "--team", "risk")
    write_parquet(frame_of(100), tmp_path / "txns.parquet")
    write_parquet(frame_of(100).drop(columns=["night"]), tmp_path / "short.parquet")
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def write(path: Path, *documents: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


def jobs_recorded() -> list[Any]:
    found: list[Any] = json.loads(run("jobs", "list", "--json"))
    return found


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"dataset": "short.parquet"}, "work.input.url: column 'night'", 2),
        ({"dataset": "nowhere.parquet"}, "nowhere.parquet' does not exist", 2),
        ({"output": "finished"}, "work.output.url: ", 7),
    ],
)
def test_apply_checks_a_job_as_submit_does_and_records_nothing(
    home: Path, change: dict[str, str], field: str, code: int
) -> None:
    (home / "finished").mkdir()
    write_success(
        OutputData(url=str(home / "finished")), "uid-1", job_name="old-scores", shards=1, rows=1,
        digest="sha256:x",
    )  # fmt: skip
    doc = job_doc("j", change.get("dataset", "txns.parquet"), change.get("output", "out"))
    out = run("apply", "-f", write(home / "job.yaml", doc), code=code)
    assert field in out
    assert jobs_recorded() == []
    # the name stays free: the same job with good inputs is then accepted
    good = job_doc("j", "txns.parquet", "out")
    assert "job/j created" in run("apply", "-f", write(home / "good.yaml", good))


def test_an_output_holding_results_names_the_job_that_wrote_them(home: Path) -> None:
    (home / "finished").mkdir()
    write_success(
        OutputData(url=str(home / "finished")), "uid-1", job_name="old-scores", shards=1, rows=1,
        digest="sha256:x",
    )  # fmt: skip
    doc = job_doc("j", "txns.parquet", "finished")
    out = run("jobs", "submit", write(home / "job.yaml", doc), code=7)
    assert "finished results of job old-scores" in out
    assert "uid-1" not in out


@pytest.mark.parametrize("command", [("apply", "-f"), ("jobs", "submit")])
def test_a_job_of_a_team_the_policy_does_not_admit_is_refused(
    home: Path, command: tuple[str, str]
) -> None:
    run("apply", "-f", write(home / "policy.yaml", POLICY))
    doc = job_doc("j", "txns.parquet", "out", team="fraud")
    out = run(*command, write(home / "job.yaml", doc), code=2)
    assert "team: 'fraud' is not a team of policy default" in out
    assert "teams known: risk, web" in out
    assert jobs_recorded() == []
    # a team the policy names is accepted
    run(*command, write(home / "ok.yaml", job_doc("j", "txns.parquet", "out")))


@pytest.mark.parametrize("command", [("apply", "-f"), ("jobs", "submit")])
def test_a_job_in_an_unknown_tier_is_refused(home: Path, command: tuple[str, str]) -> None:
    doc = {**job_doc("j", "txns.parquet", "out"), "tier": "critcal"}
    out = run(*command, write(home / "job.yaml", doc), code=2)
    assert "tier: 'critcal' is not a tier of policy default (" in out
    assert "critical" in out
    assert "batch" in out
    assert jobs_recorded() == []


def test_an_endpoint_in_an_unknown_tier_is_refused(home: Path) -> None:
    inputs = [{"name": c, "dtype": "float64"} for c in ("amount", "age_days")]
    endpoint = {
        "kind": "Endpoint", "name": "checkout", "team": "web", "tier": "critcal",
        "contract": {"name": "checkout", "inputs": inputs}, "routes": [{"model": "fraud:1"}],
    }  # fmt: skip
    out = run("apply", "-f", write(home / "endpoint.yaml", endpoint), code=2)
    assert "tier: 'critcal' is not a tier of policy default" in out
    assert json.loads(run("get", "endpoints", "--json")) == []


def test_apply_help_lists_every_kind_it_takes() -> None:
    text = run("apply", "--help")
    for kind in ("Endpoint", "FeatureSet", "Job", "Policy"):
        assert kind in text

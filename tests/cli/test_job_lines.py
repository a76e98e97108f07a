"""The lines ``modelplane why JOB``, ``jobs submit`` and ``jobs show`` print: sentences that
say the state once, an arrow only where an alias was pinned, no ``None``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.kit.jobs import build_model, frame_of, job_doc, write_parquet
from typer.testing import CliRunner

from modelplane.cli.jobs import submitted_line
from modelplane.cli.main import app
from modelplane.cli.policy import job_why_line

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("queued", "waiting for quota: cpu: 1000 asked + 1000 in use would exceed team risk's"
         " limit 1000", "is queued: waiting for quota: cpu: 1000 asked"),
        ("queued", "queued", "is queued: planned, not yet considered by the queue"),
        ("pending", "submitted", "is pending: its inputs are not checked yet"),
        ("running", "queued", "is running"),
        ("running", "running", "is running"),
        ("succeeded", "2 shard(s), 200 rows done", "has succeeded: 2 shard(s), 200 rows done"),
        ("succeeded", "", "has succeeded"),
        ("failed", "invalid: work.input.url: gone", "has failed: invalid: work.input.url: gone"),
        ("cancelled", "cancelled by alice: wrong day", "was cancelled by alice: wrong day"),
    ],
)  # fmt: skip
def test_why_reads_as_one_sentence(state: str, reason: str, expected: str) -> None:
    line = job_why_line("tm", "risk", "batch", state, reason)
    assert line.startswith(f"job tm (team risk, tier batch) {expected}")
    if expected in ("is running", "has succeeded"):
        assert line == f"job tm (team risk, tier batch) {expected}"
    for word in ("queued", "running", "succeeded", "cancelled", "pending"):
        assert line.count(word) <= 1, line


def test_submit_shows_an_arrow_only_for_a_pinned_alias() -> None:
    fixed = {"name": "a", "outcome": "created", "resolved": {"fraud:1": {"ref": "fraud:1"}}}
    assert submitted_line(fixed) == "job/a submitted"
    alias = {"name": "b", "outcome": "created",
             "resolved": {"fraud@champion": {"ref": "fraud:1"}}}  # fmt: skip
    assert submitted_line(alias) == "job/b submitted (model fraud@champion -> fraud:1)"
    assert submitted_line({"name": "c", "outcome": "unchanged", "resolved": {}}) == (
        "job/c unchanged"
    )


def test_show_of_a_job_without_an_output_folder_prints_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    folder, _ = build_model(tmp_path / "pkg")
    assert runner.invoke(app, ["push", str(folder), "--team", "risk"]).exit_code == 0
    write_parquet(frame_of(10), tmp_path / "txns.parquet")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job_doc("j", "txns.parquet", "out")))
    submitted = runner.invoke(app, ["jobs", "submit", "job.yaml"])
    assert submitted.output.strip() == "job/j submitted", submitted.output
    # not planned yet (no `up`): like a job refused at planning, it has no output folder
    shown = runner.invoke(app, ["jobs", "show", "j"])
    assert shown.exit_code == 0, shown.output
    assert "  output    -\n" in shown.output
    assert "None" not in shown.output

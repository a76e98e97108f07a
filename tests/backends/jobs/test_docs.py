"""docs/jobs.md's example is the shipped one, and its four shards score as the model does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tests.backends.jobs.conftest import COLUMNS, Scoring, read_output, tasks_of

from modelplane.backends.jobs.runner import commit_shard, load_model, run_shard, staging_path
from modelplane.spec.io import parse
from modelplane.spec.job import BatchScoreJob, Job, OutputData

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "jobs.md"
EXAMPLE = ROOT / "examples" / "job-batch-score.yaml"


def documented_job() -> dict[str, object]:
    [block] = re.findall(r"```yaml\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    data = yaml.safe_load(block)
    assert isinstance(data, dict)
    return data


def test_the_page_shows_the_shipped_example() -> None:
    assert documented_job() == yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def test_the_example_runs_in_four_shards(scoring: Scoring, tmp_path: Path) -> None:
    shipped = parse(Job, documented_job())
    assert isinstance(shipped.work, BatchScoreJob)
    # the shipped paths are relative to the repository root; the output goes to tmp here
    work = shipped.work.model_copy(update={
        "input": shipped.work.input.model_copy(update={"url": str(ROOT / shipped.work.input.url)}),
        "output": OutputData(url=str(tmp_path / "scores")),
    })  # fmt: skip
    job = shipped.model_copy(update={"work": work})
    tasks = tasks_of(scoring, job, "docs-1")
    assert [t.plan.expected_rows for t in tasks] == [50, 50, 50, 50]
    # in this process (tests/backends/jobs/test_local.py runs shards as processes)
    for task in tasks:
        run_shard(task, staging_path(task))
        assert commit_shard(task, staging_path(task)) == (50, True)
    out = read_output(tmp_path / "scores")
    rows = pd.read_csv(ROOT / "examples" / "data" / "transactions.csv")
    assert out["txn_id"].tolist() == rows["txn_id"].tolist()
    model = load_model(str(scoring.model_dir), scoring.model.digest)
    expected = model.predict({c: rows[c].to_numpy() for c in COLUMNS})
    assert np.array_equal(out["label"].to_numpy(), expected["label"])
    scores = np.stack(out["probabilities"].to_numpy())
    assert np.allclose(scores, expected["probabilities"], rtol=1e-6, atol=1e-7)

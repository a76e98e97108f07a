"""docs/jobs.md's examples are the shipped ones and run as the page says: the batch-score
job's four shards score as the model does, the materialize job's two shards fill the
online store, the python job pushes its trained model with lineage to the job."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from tests.backends.jobs.conftest import Scoring, tasks_of
from tests.backends.jobs.kinds_kit import Home, make_home
from tests.kit.jobs import COLUMNS, read_output

from modelplane.backends.jobs.planner import absolute_urls
from modelplane.backends.jobs.runner import commit_shard, load_model, run_shard, staging_path
from modelplane.features.stores import open_online_store
from modelplane.spec.io import parse
from modelplane.spec.job import BatchScoreJob, Job, OutputData

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "jobs.md"
EXAMPLE = ROOT / "examples" / "job-batch-score.yaml"


def documented_jobs() -> dict[str, dict[str, Any]]:
    """The page's YAML jobs by ``work.type``."""
    blocks = re.findall(r"```yaml\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    found = [yaml.safe_load(block) for block in blocks]
    return {str(data["work"]["type"]): data for data in found}


def documented_job() -> dict[str, Any]:
    return documented_jobs()["batch-score"]


@pytest.mark.parametrize(
    ("kind", "shipped"),
    [("batch-score", EXAMPLE), ("materialize", ROOT / "examples" / "job-materialize.yaml"),
     ("python", ROOT / "examples" / "job-python.yaml")],
)  # fmt: skip
def test_the_page_shows_the_shipped_examples(kind: str, shipped: Path) -> None:
    assert documented_jobs()[kind] == yaml.safe_load(shipped.read_text(encoding="utf-8"))


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


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    yield from make_home(tmp_path_factory.mktemp("docs"))


def submitted(kind: str) -> Job:
    """The page's job as ``modelplane jobs submit`` sends it from the repository root."""
    return parse(Job, absolute_urls(documented_jobs()[kind], str(ROOT)))


def in_process(home: Home, job: Job, uid: str, store: str | None = None) -> int:
    """Plan, claim, run every shard in this process (test_kinds runs them as processes),
    commit, finish; the rows written."""
    planner = home.planner(store)
    planned = planner.plan(job, uid)
    planner.claim(job, uid, planned)
    rows = 0
    for plan in planned.shards:
        task = planner.task(job, uid, plan, 1, planned)
        run_shard(task, staging_path(task))
        rows += commit_shard(task, staging_path(task))[0]
    planner.finish(job, uid, planned, rows)
    return rows


def test_the_materialize_example_fills_the_online_store(home: Home, tmp_path: Path) -> None:
    job = submitted("materialize")
    url = f"sqlite:///{tmp_path}/features.db"
    assert in_process(home, job, "docs-mat", url) == 1000
    rows = pd.read_csv(ROOT / "examples" / "data" / "customers.csv")
    store = open_online_store(url)
    try:
        [found] = store.read("customer", 1, [42], ["txn_count_7d"], now=2e9)
    finally:
        store.close()
    assert found.values["txn_count_7d"] == rows.set_index("customer_id").txn_count_7d[42]


def test_the_python_example_pushes_a_model_trained_by_the_job(home: Home) -> None:
    job = submitted("python")
    in_process(home, job, "docs-py")
    version = home.registry.get("fraud-retrained:1")
    assert version.manifest.lineage.parameters["modelplane.job"] == "retrain-fraud"
    data = str(ROOT / "examples" / "data" / "transactions.csv")
    assert [v.ref for v in home.registry.versions_trained_on(data)] == ["fraud-retrained:1"]

"""The planner of every kind: what it refuses before any shard runs (the field named, nothing
written), and a training job's package pushed with lineage to the job and its data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.backends.jobs.kinds_kit import Home, job, make_home, run_all
from tests.kit import cli

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.backends.jobs.planner import absolute_urls
from modelplane.errors import ModelplaneError
from modelplane.registry.provenance import dataset_ref
from modelplane.security.sandbox import SandboxPolicy

pytestmark = pytest.mark.timeout(300)
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    yield from make_home(tmp_path_factory.mktemp("planner"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"txn_id": np.arange(200), "amount": rng.gamma(2.0, 40.0, 200),
                          "age_days": rng.uniform(0, 2000, 200),
                          "merchant_risk": rng.beta(2, 5, 200),
                          "night": rng.integers(0, 2, 200).astype(float)})  # fmt: skip
    path = tmp_path_factory.mktemp("data") / "transactions.parquet"
    frame.to_parquet(path)
    return path


def refused(home: Home, work: dict[str, object], store: str | None = None) -> ModelplaneError:
    with pytest.raises(ModelplaneError) as caught:
        home.planner(store).plan(job("refused", work), "uid-refused")
    return caught.value


def fields(error: ModelplaneError) -> set[str]:
    return {str(d.get("field")) for d in error.details or []}


def test_an_unsigned_package_is_refused_naming_the_package(home: Home, data: Path) -> None:
    error = refused(home, {"type": "python", "package": "unsigned-code:1",
                           "entrypoint": "model:enrich", "input": {"url": str(data)}})  # fmt: skip
    assert fields(error) >= {"work.package"}
    assert "trusts for code" in error.message


def test_a_package_of_another_runtime_is_refused(home: Home, data: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from modelplane.registry.build import package

    frame = pd.read_parquet(data)
    model = LogisticRegression().fit(frame[COLUMNS], frame.night)
    built = package(model, name="plain", output_dir=tmp_path / "plain",
                    sample_input=frame[COLUMNS].head())  # fmt: skip
    cli(home.env, "push", str(built.path))
    error = refused(home, {"type": "python", "package": "plain:1",
                           "entrypoint": "model:enrich"})  # fmt: skip
    assert fields(error) == {"work.package"}
    assert "'sklearn' package" in error.message


@pytest.mark.parametrize(
    ("entrypoint", "says"),
    [("model:nope", "defines no function 'nope'"), ("other:enrich", "has no module 'other'")],
)
def test_an_entry_point_the_package_lacks_is_refused(
    home: Home, entrypoint: str, says: str
) -> None:
    error = refused(home, {"type": "python", "package": "team-code:1", "entrypoint": entrypoint})
    assert fields(error) == {"work.entrypoint"}
    assert says in error.message


def test_a_missing_package_or_feature_set_names_its_field(home: Home, data: Path) -> None:
    error = refused(home, {"type": "python", "package": "ghost:1", "entrypoint": "model:f"})
    assert fields(error) == {"work.package"}
    error = refused(home, {"type": "materialize", "feature_set": "ghost",
                           "input": {"url": str(data)}}, "memory://")  # fmt: skip
    assert fields(error) == {"work.feature_set"}


def test_materialize_input_columns_are_checked_against_the_feature_set(
    home: Home, data: Path, tmp_path: Path
) -> None:
    error = refused(home, {"type": "materialize", "feature_set": "customer",
                           "input": {"url": str(data)}}, "memory://")  # fmt: skip
    assert fields(error) == {"work.input.url"}
    assert "'customer_id' (the entity key) is missing" in error.message
    assert "'amount' is not a feature of customer:1" in str(error.details)
    error = refused(home, {"type": "materialize", "feature_set": "customer",
                           "input": {"url": str(tmp_path / "none.csv")}}, "memory://")  # fmt: skip
    assert "does not exist" in error.message
    assert not (home.root / "jobs").exists()  # a refused job wrote nothing


def test_a_training_job_pushes_its_package_with_lineage_to_the_job_and_data(
    home: Home, data: Path
) -> None:
    spec = job("train-fraud", {"type": "python", "package": "team-code:1",
                               "entrypoint": "model:train", "input": {"url": str(data)},
                               "shard": {"rows": 50}, "parameters": {"C": 0.5},
                               "push_as": "fraud-trained"})  # fmt: skip
    executor = LocalShardExecutor(sandbox=SandboxPolicy())
    try:
        planned, outcomes = run_all(home.planner(), spec, "train-1", executor)
    finally:
        executor.close()
    assert len(planned.shards) == 1  # training sees all of its data at once
    version = home.registry.get("fraud-trained:1")
    lineage = version.manifest.lineage
    assert lineage.training_data[0] == dataset_ref(str(data))  # with the file's sha256
    assert lineage.code_revision == f"team-code:1@{planned.model_digest}"
    assert lineage.parameters["modelplane.job"] == "train-fraud"
    assert lineage.parameters["modelplane.job_uid"] == "train-1"
    assert lineage.parameters["C"] == 0.5
    assert lineage.metrics["train_accuracy"] > 0.5
    assert [v.ref for v in home.registry.versions_trained_on(str(data))] == ["fraud-trained:1"]
    assert home.registry.model_team("fraud-trained") == "risk"
    # finishing again (a control plane that died before recording success) pushes nothing new
    home.planner().finish(spec, "train-1", planned, outcomes[0].rows)
    assert [v.ref for v in home.registry.list_versions("fraud-trained")] == ["fraud-trained:1"]


def test_relative_paths_are_made_absolute_against_the_submitters_folder() -> None:
    document = {"kind": "Job", "name": "j", "work": {
        "type": "batch-score", "model": "fraud:1", "input": {"url": "data/../data/in.csv"},
        "output": {"url": "scores", "overwrite": True}}}  # fmt: skip
    work = absolute_urls(document, "/home/ana/project")["work"]
    assert work["input"] == {"url": "/home/ana/project/data/in.csv"}
    assert work["output"] == {"url": "/home/ana/project/scores", "overwrite": True}
    for kept in ("s3://bucket/in.parquet", "/abs/in.csv", "file:///abs/in.csv"):
        same = {"kind": "Job", "work": {"type": "python", "input": {"url": kept}}}
        assert absolute_urls(same, "/elsewhere") == same


def test_a_training_job_may_not_push_to_another_teams_model(home: Home, data: Path) -> None:
    # team-code was pushed by an administrator, for no team: a team's job cannot add to it
    error = refused(home, {"type": "python", "package": "team-code:1",
                           "entrypoint": "model:train", "input": {"url": str(data)},
                           "push_as": "team-code"})  # fmt: skip
    assert fields(error) == {"work.push_as"}
    assert "belongs to no team" in error.message

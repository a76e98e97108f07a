"""A registered model and a Parquet dataset for the jobs tests: real files, a real registry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from tests.kit.jobs import COLUMNS, frame_of, write_parquet

from modelplane.backends.jobs.models import JobModel, fetch_package, resolve_model
from modelplane.backends.jobs.plan import claim_output, plan_batch_score, shard_task
from modelplane.backends.jobs.runner import load_model
from modelplane.core.jobs import ShardTask
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry
from modelplane.spec.io import parse
from modelplane.spec.job import BatchScoreJob, Job

ROWS = 1000


@dataclass(frozen=True)
class Scoring:
    """A registered model, its fetched package and a dataset it can score."""

    registry: Registry
    model: JobModel
    model_dir: Path
    dataset: Path
    frame: pd.DataFrame
    estimator: Pipeline
    """The scikit-learn pipeline the ONNX model was converted from."""


def fraud_model(frame: pd.DataFrame) -> tuple[Pipeline, Any]:
    """A logistic regression over the four columns, and its ONNX form (one input per column;
    ONNX loads in a fraction of a second, which keeps shard processes quick to start)."""
    features = frame[COLUMNS].astype(np.float32)
    target = (frame.merchant_risk + 0.2 * frame.night > 0.4).astype(int)
    pipe = make_pipeline(
        ColumnTransformer([("columns", "passthrough", COLUMNS)]), LogisticRegression(max_iter=500)
    ).fit(features, target)
    proto = to_onnx(pipe, features.head(), options={"zipmap": False}, target_opset=17)
    return pipe, proto


@pytest.fixture(scope="module")
def scoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scoring]:
    root = tmp_path_factory.mktemp("scoring")
    registry = open_registry(f"sqlite:///{root}/state.db", str(root / "art"), actor="alice")
    frame = frame_of(ROWS)
    target = (frame.merchant_risk + 0.2 * frame.night > 0.4).astype(int)
    model = LogisticRegression(max_iter=500).fit(frame[COLUMNS], target)
    built = package(
        model, name="fraud", output_dir=root / "pkg", sample_input=frame[COLUMNS].head()
    )
    registry.push(built.path)
    registry.set_alias("fraud", "champion", 1)
    resolved = resolve_model(registry, "fraud@champion")
    folder = fetch_package(registry, resolved, root / "cache")
    dataset = write_parquet(frame, root / "transactions.parquet")
    yield Scoring(registry, resolved, folder, dataset, frame, model)
    registry.close()


def job_of(dataset: Path | str, output: Path | str, **work: Any) -> Job:
    """A batch-score job of ``fraud@champion`` over ``dataset``: 4 shards unless told."""
    spec: dict[str, Any] = {
        "type": "batch-score",
        "model": "fraud@champion",
        "input": {"url": str(dataset)},
        "output": {"url": str(output)},
        "shard": {"rows": 250},
        "passthrough": ["txn_id"],
    }
    spec.update(work)
    return parse(
        Job, {"name": "score", "team": "risk", "work": spec, "pins": {"fraud@champion": "fraud:1"}}
    )


def tasks_of(scoring: Scoring, job: Job, uid: str, attempt: int = 1) -> list[ShardTask]:
    """Checks, claims the output, and gives one task per shard (what the controller does)."""
    manifest = scoring.model.manifest
    assert isinstance(job.work, BatchScoreJob)
    _, plans = plan_batch_score(job.work, manifest.signature, uid)
    claim_output(job.work.output, uid)
    return [
        shard_task(job, uid, plan, attempt, model_ref=scoring.model.ref,
                   model_digest=scoring.model.digest, model_dir=str(scoring.model_dir),
                   signature=manifest.signature)
        for plan in plans
    ]  # fmt: skip


def direct_scores(scoring: Scoring, rows: slice = slice(None)) -> dict[str, npt.NDArray[Any]]:
    """The model called directly on ``rows`` of the dataset, through the serving runtime."""
    loaded = load_model(str(scoring.model_dir), scoring.model.digest)
    frame = scoring.frame.iloc[rows]
    return loaded.predict({c: frame[c].to_numpy(np.float32) for c in COLUMNS})

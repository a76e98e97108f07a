"""The Job resource: kinds, defaults, and bad fields named by their path."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.errors import InvalidSpec
from modelplane.spec.io import dump_yaml, load_yaml, parse
from modelplane.spec.job import BatchScoreJob, Job, MaterializeJob, PythonJob


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "Job",
        "name": "score-march",
        "team": "risk",
        "work": {
            "type": "batch-score",
            "model": "fraud@champion",
            "input": {"url": "s3://bucket/march.parquet"},
            "output": {"url": "s3://bucket/scores/march/"},
        },
    }
    base.update(changes)
    return base


def problem(data: dict[str, Any]) -> str:
    with pytest.raises(InvalidSpec) as err:
        parse(Job, data)
    return str(err.value)


def test_defaults_and_round_trip() -> None:
    job = parse(Job, doc())
    assert (job.tier, job.parallelism.min, job.parallelism.max) == ("batch", 1, 4)
    assert (job.retries.limit, job.retries.backoff_s) == (3, 5.0)
    assert isinstance(job.work, BatchScoreJob)
    assert job.work.input.resolved_format == "parquet"
    assert job.work.rows_per_shard == 100_000
    assert job.model_ref == "fraud@champion"
    assert load_yaml(Job, dump_yaml(job)) == job
    pinned = job.model_copy(update={"pins": {"fraud@champion": "fraud:3"}})
    assert pinned.model_ref == "fraud:3"


def test_the_three_kinds() -> None:
    materialize = parse(Job, doc(work={"type": "materialize", "feature_set": "customer:2",
                                       "input": {"url": "/data/c.csv"}}))  # fmt: skip
    assert isinstance(materialize.work, MaterializeJob)
    assert materialize.work.input.resolved_format == "csv"
    assert materialize.model_ref is None
    python = parse(Job, doc(work={"type": "python", "package": "trainer:4",
                                  "entrypoint": "train:fit", "push_as": "fraud"}))  # fmt: skip
    assert isinstance(python.work, PythonJob)
    assert python.model_ref == "trainer:4"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"parallelism": {"min": 5, "max": 2}}, "min (5) is above max (2)"),
        ({"resources": {"gpus": 1.5}}, "more than one GPU must be a whole number"),
        ({"resources": {"gpu_model": "A10"}}, "gpu_model is set but gpus is 0"),
        ({"resources": {"cpu": 0}}, "resources.cpu"),
        ({"deadline": "2026-12-31T18:00:00"}, "deadline needs a time zone"),
        ({"budget": {"amount": 10, "currency": "dollars"}}, "budget.currency"),
        ({"retries": {"limit": -1}}, "retries.limit"),
        ({"work": {"type": "sql"}}, "work"),
        ({"shell": "rm -rf /"}, "shell"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], expected: str) -> None:
    assert expected in problem(doc(**change))


def test_bad_kind_specific_fields_are_named() -> None:
    """By their YAML path: pydantic's union tag (``work.batch-score.…``) is no field."""
    work = doc()["work"]
    assert "work.model" in problem(doc(work={**work, "model": "fraud"}))
    assert "work.shard.rows: Input should be greater" in problem(
        doc(work={**work, "shard": {"rows": 0}})
    )
    assert "batch-score" not in problem(doc(work={**work, "shard": {"rows": 0}}))
    assert "work.input.format" in problem(
        doc(work={**work, "input": {"url": "x", "format": "json"}})
    )
    assert "set one of rows, row_groups or count" in problem(
        doc(work={**work, "shard": {"rows": 10, "count": 2}})
    )
    bad_entry = {"type": "python", "package": "t:1", "entrypoint": "os.system"}
    assert "is not 'module:function'" in problem(doc(work=bad_entry))
    bad_set = {"type": "materialize", "feature_set": "c:0", "input": {"url": "x"}}
    assert "work.feature_set" in problem(doc(work=bad_set))

"""Checks before any shard runs: each bad input gets an error naming its field, and the
output location is left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from tests.backends.jobs.conftest import Scoring, job_of
from tests.kit.jobs import frame_of, write_parquet

from modelplane.backends.jobs.models import resolve_model
from modelplane.backends.jobs.plan import (
    CLAIM_MARKER,
    check_output,
    claim_output,
    inspect_dataset,
    plan_batch_score,
    write_success,
)
from modelplane.core.jobs import SUCCESS_MARKER, ShardPlan
from modelplane.errors import Conflict, InvalidSpec, NotFound
from modelplane.spec.job import BatchScoreJob, InputData, Job, OutputData


def work_of(job: Job) -> BatchScoreJob:
    assert isinstance(job.work, BatchScoreJob)
    return job.work


def plan(scoring: Scoring, job: Job, uid: str = "u") -> tuple[ShardPlan, ...]:
    return plan_batch_score(work_of(job), scoring.model.manifest.signature, uid)[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_row_ranges_and_row_groups(scoring: Scoring, tmp_path: Path) -> None:
    signature = scoring.model.manifest.signature
    _, by_rows = plan_batch_score(
        work_of(job_of(scoring.dataset, tmp_path / "a", shard={"rows": 300})), signature, "u"
    )
    assert [(p.row_start, p.row_stop) for p in by_rows] == [(0, 300), (300, 600), (600, 900),
                                                            (900, 1000)]  # fmt: skip
    _, by_groups = plan_batch_score(
        work_of(job_of(scoring.dataset, tmp_path / "a", shard={"row_groups": 3})), signature, "u"
    )
    assert by_groups == (ShardPlan(0, 0, 750, (0, 1, 2)), ShardPlan(1, 750, 1000, (3,)))
    _, by_count = plan_batch_score(
        work_of(job_of(scoring.dataset, tmp_path / "a", shard={"count": 3})), signature, "u"
    )
    assert [p.expected_rows for p in by_count] == [334, 334, 332]


def test_csv_input_is_counted_and_checked(scoring: Scoring, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    pacsv.write_csv(pa.Table.from_pandas(frame_of(123), preserve_index=False), path)
    info = inspect_dataset(InputData(url=str(path)))
    assert (info.format, info.rows) == ("csv", 123)
    _, plans = plan_batch_score(
        work_of(job_of(path, tmp_path / "out", shard={"rows": 50})),
        scoring.model.manifest.signature,
        "u",
    )
    assert [p.expected_rows for p in plans] == [50, 50, 23]


def test_a_dataset_that_does_not_exist(scoring: Scoring, tmp_path: Path) -> None:
    job = job_of(tmp_path / "nowhere.parquet", tmp_path / "out")
    with pytest.raises(InvalidSpec, match=r"work\.input\.url: .*nowhere\.parquet' does not exist"):
        plan_batch_score(work_of(job), scoring.model.manifest.signature, "u")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_parquet(scoring: Scoring, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.parquet"
    bogus.write_text("not parquet")
    with pytest.raises(InvalidSpec, match=r"work\.input\.url: .* not readable as parquet"):
        plan_batch_score(
            work_of(job_of(bogus, tmp_path / "o")), scoring.model.manifest.signature, "u"
        )


def test_a_column_the_model_needs_is_missing(scoring: Scoring, tmp_path: Path) -> None:
    data = write_parquet(frame_of(10).drop(columns=["night"]), tmp_path / "short.parquet")
    with pytest.raises(InvalidSpec, match=r"work\.input\.url: column 'night' .* is missing") as err:
        plan_batch_score(
            work_of(job_of(data, tmp_path / "o")), scoring.model.manifest.signature, "u"
        )
    assert err.value.details[0]["field"] == "work.input.url"


def test_a_column_of_the_wrong_type(scoring: Scoring, tmp_path: Path) -> None:
    frame = frame_of(10)
    frame["amount"] = frame["amount"].astype(str)
    data = write_parquet(frame, tmp_path / "text.parquet")
    # in the words of signatures and the docs: Parquet's large_string is a string
    with pytest.raises(InvalidSpec, match=r"'amount' is string, the model needs float64$"):
        plan_batch_score(
            work_of(job_of(data, tmp_path / "o")), scoring.model.manifest.signature, "u"
        )


def test_a_passthrough_column_that_is_missing(scoring: Scoring, tmp_path: Path) -> None:
    job = job_of(scoring.dataset, tmp_path / "o", passthrough=["order_id"])
    with pytest.raises(InvalidSpec, match=r"work\.passthrough: column 'order_id'"):
        plan_batch_score(work_of(job), scoring.model.manifest.signature, "u")


def test_a_model_ref_that_does_not_exist(scoring: Scoring) -> None:
    for ref in ("fraud:9", "fraud@nobody", "ghost:1"):
        with pytest.raises(NotFound, match=r"work\.model: .*not found") as err:
            resolve_model(scoring.registry, ref)
        assert err.value.details[0]["field"] == "work.model"
    assert resolve_model(scoring.registry, "fraud@champion").ref == "fraud:1"


def test_an_output_holding_another_jobs_results(scoring: Scoring, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = work_of(job_of(scoring.dataset, out))
    claim_output(first.output, "job-a")
    (out / "part-00000.parquet").write_bytes(b"results of job-a")
    write_success(first.output, "job-a", job_name="score", shards=1, rows=1, digest="sha256:x")
    before = snapshot(out)

    second = work_of(job_of(scoring.dataset, out))
    # named as people know the job, by its name (the uid is in the marker)
    with pytest.raises(Conflict, match=r"work\.output\.url: .*finished results of job score;"):
        plan_batch_score(second, scoring.model.manifest.signature, "job-b")
    with pytest.raises(Conflict):
        claim_output(second.output, "job-b")
    assert snapshot(out) == before
    # the same job again (a resume) is its own output's owner
    assert check_output(first.output, "job-a").finished_by == "job-a"

    replacing = second.model_copy(update={"output": OutputData(url=str(out), overwrite=True)})
    plan_batch_score(replacing, scoring.model.manifest.signature, "job-b")
    assert snapshot(out) == before  # planning writes nothing, even with overwrite
    claim_output(replacing.output, "job-b")
    assert not (out / "part-00000.parquet").exists()
    assert not (out / SUCCESS_MARKER).exists()
    assert json.loads((out / CLAIM_MARKER).read_text()) == {"job_uid": "job-b"}


def test_an_output_holding_parts_of_an_unfinished_job(scoring: Scoring, tmp_path: Path) -> None:
    out = tmp_path / "out"
    claim_output(work_of(job_of(scoring.dataset, out)).output, "job-a", "nightly")
    assert json.loads((out / CLAIM_MARKER).read_text()) == {"job_uid": "job-a", "job": "nightly"}
    with pytest.raises(Conflict, match="holds parts of job nightly;"):
        check_output(work_of(job_of(scoring.dataset, out)).output, "job-b")
    # a marker of an older version, without the name, names the uid
    (out / CLAIM_MARKER).write_text(json.dumps({"job_uid": "job-a"}))
    with pytest.raises(Conflict, match="holds parts of job uid job-a;"):
        check_output(work_of(job_of(scoring.dataset, out)).output, "job-b")


def test_an_output_that_is_a_file(scoring: Scoring, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(InvalidSpec, match=r"work\.output\.url: .* is a file"):
        check_output(work_of(job_of(scoring.dataset, tmp_path / "out")).output, "u")


def test_row_groups_need_parquet(scoring: Scoring, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    pd.DataFrame(frame_of(5)).to_csv(path, index=False)
    job = job_of(path, tmp_path / "o", shard={"row_groups": 1})
    with pytest.raises(InvalidSpec, match=r"work\.shard\.row_groups"):
        plan_batch_score(work_of(job), scoring.model.manifest.signature, "u")

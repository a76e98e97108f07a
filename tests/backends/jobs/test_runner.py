"""The shard runner in this process: what it reads, what it writes, and the commit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from tests.backends.jobs.conftest import Scoring, direct_scores, job_of, tasks_of
from tests.kit.jobs import COLUMNS, frame_of

from modelplane.backends.jobs.runner import (
    REQUEST_ID,
    commit_shard,
    final_rows,
    read_shard,
    run_shard,
    staging_path,
)
from modelplane.core.jobs import ShardPlan
from modelplane.errors import IntegrityError


def test_a_shard_reads_only_its_rows_and_columns(scoring: Scoring, tmp_path: Path) -> None:
    tasks = tasks_of(scoring, job_of(scoring.dataset, tmp_path / "o", shard={"rows": 300}), "u")
    table = read_shard(tasks[1])  # rows 300..600 cross the row groups at 250 and 500
    assert table.num_rows == 300
    assert table.column_names == [*COLUMNS, "txn_id"]
    assert table.column("txn_id").to_pylist() == list(range(300, 600))


def test_a_shard_by_row_groups(scoring: Scoring, tmp_path: Path) -> None:
    tasks = tasks_of(scoring, job_of(scoring.dataset, tmp_path / "o", shard={"row_groups": 2}), "u")
    assert read_shard(tasks[1]).column("txn_id").to_pylist() == list(range(500, 1000))


def test_run_then_commit_writes_the_scores_once(scoring: Scoring, tmp_path: Path) -> None:
    [task, *_] = tasks_of(scoring, job_of(scoring.dataset, tmp_path / "o"), "job-9")
    staging = staging_path(task)
    assert staging == str(tmp_path / "o" / "_attempts" / "part-00000.parquet.1.tmp")
    result = run_shard(task, staging)
    assert result.rows == 250
    assert final_rows(task.final_path) is None  # not done until committed
    assert commit_shard(task, staging) == (250, True)
    assert final_rows(task.final_path) == 250
    assert not Path(staging).exists()

    table = pq.read_table(task.final_path)
    assert table.column_names == [REQUEST_ID, "model_version", "model_digest", "txn_id", "label",
                                  "probabilities"]  # fmt: skip
    assert table.column(REQUEST_ID)[5].as_py() == "job-9/0/5"
    expected = direct_scores(scoring, slice(0, 250))
    assert np.array_equal(table.column("label").to_numpy(), expected["label"])

    # a second attempt that also finished loses: the first file stays, byte for byte
    before = Path(task.final_path).read_bytes()
    second = replace(task, attempt=2, temp_path=task.temp_path.replace(".1.tmp", ".2.tmp"))
    run_shard(second, staging_path(second))
    assert commit_shard(second, staging_path(second)) == (250, False)
    assert Path(task.final_path).read_bytes() == before
    assert not Path(staging_path(second)).exists()


def test_a_truncated_write_never_becomes_final(scoring: Scoring, tmp_path: Path) -> None:
    [task, *_] = tasks_of(scoring, job_of(scoring.dataset, tmp_path / "o"), "u")
    staging = staging_path(task)
    pq.write_table(pa.table({"x": [1, 2, 3]}), staging)
    with pytest.raises(IntegrityError, match="wrote 3 rows, the plan has 250"):
        commit_shard(task, staging)
    assert final_rows(task.final_path) is None
    assert not Path(staging).exists()


def test_csv_input_and_an_empty_shard(scoring: Scoring, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    pacsv.write_csv(pa.Table.from_pandas(frame_of(60), preserve_index=False), path)
    tasks = tasks_of(scoring, job_of(path, tmp_path / "o", shard={"rows": 25}), "u")
    assert [t.plan.expected_rows for t in tasks] == [25, 25, 10]
    last = tasks[2]
    run_shard(last, staging_path(last))
    assert commit_shard(last, staging_path(last)) == (10, True)
    assert pq.read_table(last.final_path).column("txn_id").to_pylist() == list(range(50, 60))

    empty = replace(tasks[0], plan=ShardPlan(0, 60, 60), final_path=str(tmp_path / "o" / "e"))
    assert run_shard(empty, staging_path(empty)).rows == 0
    assert commit_shard(empty, staging_path(empty)) == (0, True)

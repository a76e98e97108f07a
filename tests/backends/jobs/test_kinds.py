"""materialize and python shards, for real: SQLite and Redis online stores, shard processes
forked from the template and sandboxed like model workers, a trusted team package."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.backends.jobs.kinds_kit import Home, job, make_home, parts, run_all
from tests.conftest import REDIS_URL

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.backends.jobs.runner import commit_shard, run_shard, staging_path
from modelplane.core.jobs import SUCCESS_MARKER
from modelplane.features.stores import open_online_store
from modelplane.security.sandbox import UID_BASE, SandboxPolicy

pytestmark = pytest.mark.timeout(300)
FEATURES = ["txn_count_7d", "avg_amount_30d", "chargebacks_90d"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    yield from make_home(tmp_path_factory.mktemp("kinds"))


@pytest.fixture(scope="module")
def executor() -> Iterator[LocalShardExecutor]:
    started = LocalShardExecutor(sandbox=SandboxPolicy())
    yield started
    started.close()


def customers(rows: int, first_key: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(first_key + 3)
    return pd.DataFrame(
        {
            "customer_id": np.arange(first_key, first_key + rows, dtype=np.int64),
            "event_time": np.full(rows, 1_700_000_000.0) + np.arange(rows),
            "txn_count_7d": rng.integers(0, 50, rows),
            "avg_amount_30d": rng.gamma(2.0, 40.0, rows),
            "chargebacks_90d": rng.integers(0, 3, rows),
        }
    )


def stored(url: str, frame: pd.DataFrame) -> pd.DataFrame:
    store = open_online_store(url)
    try:
        keys = frame.customer_id.tolist()
        found = store.read("customer", 1, keys, FEATURES, now=2_000_000_000.0)
    finally:
        store.close()
    assert not [f.key for f in found if f.missing], "keys missing from the online store"
    return pd.DataFrame([{"customer_id": f.key, **f.values} for f in found])


def test_materialize_in_shards_into_sqlite_and_twice_is_the_same(
    home: Home, executor: LocalShardExecutor, tmp_path: Path
) -> None:
    frame = customers(300)
    data = tmp_path / "customers.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data, row_group_size=64)
    url = f"sqlite:///{tmp_path}/features.db"
    spec = job("backfill", {"type": "materialize", "feature_set": "customer",
                            "input": {"url": str(data)}, "shard": {"rows": 100},
                            "batch_rows": 40})  # fmt: skip
    planner = home.planner(url)
    planned, outcomes = run_all(planner, spec, "mat-1", executor)
    assert planned.model_ref == "customer:1"  # the latest version, pinned at plan
    assert [o.rows for o in outcomes] == [100, 100, 100]
    got = stored(url, frame)
    pd.testing.assert_frame_equal(got, frame[["customer_id", *FEATURES]], check_dtype=False)
    receipts = Path(planned.output_url or "")
    assert parts(receipts).column("customer_id").to_pylist() == [str(k) for k in range(300)]
    assert (receipts / SUCCESS_MARKER).is_file()

    # a shard run again (a retry after a crash between its write and its commit) leaves
    # the same rows, and its commit never replaces the receipt that is there
    task = planner.task(spec, "mat-1", planned.shards[1], 2, planned)
    run_shard(task, staging_path(task))
    assert commit_shard(task, staging_path(task)) == (100, False)
    pd.testing.assert_frame_equal(stored(url, frame), got)
    # and the executor does not even start an attempt of a shard whose receipt is there
    executor.start(planner.task(spec, "mat-1", planned.shards[0], 3, planned))
    [again] = executor.wait(10)
    assert again.reused


def test_materialize_csv_into_redis_keeps_the_newest_event(
    home: Home, executor: LocalShardExecutor, tmp_path: Path
) -> None:
    # keys of our own in the shared Redis: other tests write customer:1 too
    first = 10_000_000 + uuid.uuid4().int % 1_000_000_000
    frame = customers(120, first)
    data = tmp_path / "customers.csv"
    frame.to_csv(data, index=False)
    spec = job("backfill-redis", {"type": "materialize", "feature_set": "customer:1",
                                  "input": {"url": str(data)}, "shard": {"count": 3}})  # fmt: skip
    run_all(home.planner(REDIS_URL), spec, f"mat-r-{first}", executor)
    got = stored(REDIS_URL, frame)
    pd.testing.assert_frame_equal(got, frame[["customer_id", *FEATURES]], check_dtype=False)

    # an older backfill of the same keys, run later, loses to the newer values
    older = frame.assign(event_time=frame.event_time - 1000, txn_count_7d=999)
    older.to_csv(tmp_path / "older.csv", index=False)
    stale = job("backfill-old", {"type": "materialize", "feature_set": "customer:1",
                                 "input": {"url": str(tmp_path / "older.csv")}})  # fmt: skip
    run_all(home.planner(REDIS_URL), stale, f"mat-o-{first}", executor)
    pd.testing.assert_frame_equal(stored(REDIS_URL, frame), got)


def test_a_python_function_over_shards_writes_parts_with_the_package_version(
    home: Home, executor: LocalShardExecutor, tmp_path: Path
) -> None:
    frame = customers(10).assign(txn_id=np.arange(10), amount=np.arange(10) * 1.5,
                                 night=np.arange(10) % 2)  # fmt: skip
    data = tmp_path / "txns.parquet"
    frame.to_parquet(data)
    out = tmp_path / "enriched"
    spec = job("enrich", {"type": "python", "package": "team-code:1", "entrypoint": "model:enrich",
                          "input": {"url": str(data)}, "output": {"url": str(out)},
                          "shard": {"rows": 4}, "parameters": {"factor": 10}})  # fmt: skip
    planned, outcomes = run_all(home.planner(), spec, "py-1", executor)
    assert [o.rows for o in outcomes] == [4, 4, 2]
    table = parts(out).to_pandas()
    assert table.txn_id.tolist() == list(range(10))
    assert np.allclose(table.amount_cents, frame.amount * 10)
    assert table.at_night.tolist() == [bool(n) for n in frame.night]
    assert set(table.package_version) == {"team-code:1"}
    assert set(table.package_digest) == {planned.model_digest}
    assert (out / SUCCESS_MARKER).is_file()


def test_a_python_function_that_raises_fails_its_shard_with_the_error(
    home: Home, executor: LocalShardExecutor, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"txn_id": [1, 2], "amount": [1.0, 2.0]})  # no 'night' column
    frame.to_parquet(tmp_path / "bad.parquet")
    spec = job("enrich-bad", {"type": "python", "package": "team-code:1",
                              "entrypoint": "model:enrich",
                              "input": {"url": str(tmp_path / "bad.parquet")},
                              "output": {"url": str(tmp_path / "out")}})  # fmt: skip
    planner = home.planner()
    planned = planner.plan(spec, "py-bad")
    planner.claim(spec, "py-bad", planned)
    executor.start(planner.task(spec, "py-bad", planned.shards[0], 1, planned))
    [outcome] = executor.wait(60)
    assert outcome.error is not None
    assert "night" in outcome.error
    assert not list((tmp_path / "out").glob("part-*"))


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="the sandbox's own uid and mounts need root (CI runs as root)",
)
def test_a_python_shard_runs_in_the_model_workers_sandbox(
    home: Home, executor: LocalShardExecutor, tmp_path: Path
) -> None:
    outside = tmp_path / "escaped.txt"
    spec = job("probe", {"type": "python", "package": "probe-code:1", "entrypoint": "model:probe",
                         "output": {"url": str(tmp_path / "out")},
                         "parameters": {"outside": str(outside), "port": 6379}})  # fmt: skip
    run_all(home.planner(), spec, "probe-1", executor)
    [seen] = parts(tmp_path / "out").to_pylist()
    assert seen["uid"] >= UID_BASE
    assert seen["wrote_scratch"]
    assert not seen["wrote_outside"]
    assert not outside.exists()
    assert not seen["reached_network"]  # Redis listens there; the shard cannot reach it
    assert seen["modelplane_env"] == []

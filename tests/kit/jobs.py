"""Real data for job tests: a scikit-learn model package and Parquet datasets it can score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression
from tests.kit import wait_for

from modelplane.core.jobs import ShardExecutor, ShardOutcome
from modelplane.registry.build import package

__all__ = [
    "COLUMNS",
    "build_model",
    "frame_of",
    "job_doc",
    "read_output",
    "wait_outcomes",
    "write_parquet",
]

COLUMNS = ["amount", "age_days", "merchant_risk", "night"]


def frame_of(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "txn_id": np.arange(rows, dtype=np.int64),
            "amount": rng.gamma(2.0, 40.0, rows),
            "age_days": rng.uniform(0, 2000, rows),
            "merchant_risk": rng.beta(2, 5, rows),
            "night": rng.integers(0, 2, rows).astype(float),
        }
    )


def build_model(folder: Path, name: str = "fraud") -> tuple[Path, LogisticRegression]:
    """A package folder of a logistic regression over ``COLUMNS``, and the estimator."""
    frame = frame_of(500, seed=1)
    target = (frame.merchant_risk + 0.2 * frame.night > 0.4).astype(int)
    model = LogisticRegression(max_iter=500).fit(frame[COLUMNS], target)
    built = package(model, name=name, output_dir=folder, sample_input=frame[COLUMNS].head())
    return built.path, model


def write_parquet(frame: pd.DataFrame, path: Path, row_group_rows: int = 250) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group_rows)
    return path


def read_output(folder: Path) -> pd.DataFrame:
    """Every part of an output folder, in shard order."""
    parts = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pandas()


def job_doc(
    name: str,
    dataset: Path | str,
    output: Path | str,
    *,
    team: str = "risk",
    model: str = "fraud:1",
    parallelism: tuple[int, int] = (1, 4),
    cpu: float = 1.0,
    retries: dict[str, Any] | None = None,
    overwrite: bool = False,
    **work: Any,
) -> dict[str, Any]:
    """A batch-score ``Job`` document: 250 rows a shard unless told."""
    spec: dict[str, Any] = {
        "type": "batch-score",
        "model": model,
        "input": {"url": str(dataset)},
        "output": {"url": str(output), "overwrite": overwrite},
        "shard": {"rows": 250},
        "passthrough": ["txn_id"],
        **work,
    }
    return {
        "kind": "Job",
        "name": name,
        "team": team,
        "resources": {"cpu": cpu, "memory_mb": 256},
        "parallelism": {"min": parallelism[0], "max": parallelism[1]},
        "retries": retries or {"limit": 2, "backoff_s": 0.2},
        "work": spec,
    }


def wait_outcomes(
    executor: ShardExecutor, count: int, timeout_s: float = 180
) -> list[ShardOutcome]:
    """The next ``count`` shard outcomes ``executor`` reports, waiting up to ``timeout_s``."""
    outcomes: list[ShardOutcome] = []

    def collect() -> bool:
        outcomes.extend(executor.wait(1.0))
        return len(outcomes) >= count

    wait_for(collect, timeout_s, f"{count} shard outcomes", every_s=0)
    return outcomes

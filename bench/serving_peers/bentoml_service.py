# mypy: ignore-errors
"""BentoML 1.4 service for `bench/serving.py`; runs in `bench/.venvs/bentoml`.

Environment: MPBENCH_MODEL (joblib path), MPBENCH_BATCHABLE ("1": adaptive batching),
MPBENCH_ACCESS_LOG ("0": access log off). Body: {"rows": [[16 floats], ...]}.
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np

BATCHABLE = os.environ.get("MPBENCH_BATCHABLE") == "1"
ACCESS_LOG = os.environ.get("MPBENCH_ACCESS_LOG", "1") == "1"


@bentoml.service(workers=1, logging={"access": {"enabled": ACCESS_LOG}})
class Predictor:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["MPBENCH_MODEL"])

    if BATCHABLE:

        @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
        def predict(self, rows: np.ndarray) -> np.ndarray:
            return self.model.predict(rows)

    else:

        @bentoml.api
        def predict(self, rows: np.ndarray) -> np.ndarray:
            return self.model.predict(rows)

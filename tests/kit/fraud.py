"""The fraud-score story several tests (and bench/rollout.py) tell against a real
``modelplane up``: an endpoint over two float features ``a`` and ``b``, two pushed versions
of a logistic regression, a fast rollout between them and a closed-loop load on loopback."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
from tests.kit import cli

__all__ = [
    "ENDPOINT_TEMPLATE",
    "FAST_ROLLOUT",
    "FRAUD_ENDPOINT",
    "Answer",
    "FraudLoad",
    "push_fraud_versions",
    "rollout_phase",
]

ENDPOINT_TEMPLATE = """
kind: Endpoint
name: {name}
team: {team}
contract:
  name: {name}
  inputs: [{{name: a, dtype: float64}}, {{name: b, dtype: float64}}]
  outputs: [{{name: label, dtype: int64}}]
routes: [{{model: {model}}}]
"""
"""An endpoint over features ``a`` and ``b``; fill in ``name``, ``team`` and ``model``."""

FRAUD_ENDPOINT = ENDPOINT_TEMPLATE.format(name="fraud-score", team="risk", model="fraud@champion")

FAST_ROLLOUT = """
kind: Rollout
steps: [{weight: 50, hold_s: 1}, {weight: 100, hold_s: 1}]
gates:
  - {type: min_samples, requests: 5}
  - {type: error_rate, max_rate: 0.01}
"""
"""Two one-second steps behind gates a healthy version passes at once."""


def push_fraud_versions(env: dict[str, str], folder: Path, rows: int) -> None:
    """Push ``fraud:1`` (alias champion) and ``fraud:2``: logistic regressions (C 1.0 and
    0.5) fit on ``rows`` rows, label ``a > 0``."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from modelplane.registry.build import package

    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(rows, 2)), columns=["a", "b"])
    for version, c in enumerate((1.0, 0.5), start=1):
        model = LogisticRegression(C=c).fit(frame, (frame["a"] > 0).astype(int))
        built = package(model, name="fraud", output_dir=folder / f"p{version}",
                        sample_input=frame.head())  # fmt: skip
        cli(env, "push", str(built.path), *(("--alias", "champion") if version == 1 else ()))


def rollout_phase(env: dict[str, str]) -> str:
    """The only rollout's phase; "" before it has a status."""
    found = json.loads(cli(env, "get", "rollouts", "--json"))
    return str(found[0]["status"]["state"]["phase"]) if found and found[0]["status"] else ""


class Answer(NamedTuple):
    sent: float
    """``time.monotonic()`` when the request left."""
    status: int
    version: str
    """The model version that answered ("" when none did)."""
    request_id: str
    label: int
    """The true label of the row sent, to feed back."""


class FraudLoad(threading.Thread):
    """Closed-loop one-row predictions to ``url`` until ``stop`` is set, each answer kept."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, threading.Event()
        self.answers: list[Answer] = []

    def run(self) -> None:
        rng = np.random.default_rng(3)
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                a, b = rng.normal(size=2)
                sent = time.monotonic()
                response = http.post(self.url, json={"instances": [{"a": a, "b": b}]})
                headers = response.headers
                self.answers.append(Answer(sent, response.status_code,
                                           headers.get("modelplane-model-version", ""),
                                           headers.get("modelplane-request-id", ""),
                                           int(a > 0)))  # fmt: skip

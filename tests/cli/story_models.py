"""Models for the rollout stories, packaged with the ``python`` runtime (this file is
copied into each package, so it imports only installed libraries).

Each answers ``label`` (int64) for inputs ``a`` and ``b`` (float64):

- ``Threshold``: ``a > 0``, the stable behaviour, and ``Healthy``, a new version of it;
- ``Flaky``: like ``Threshold``, but raises on about 5 % of requests;
- ``Drifted``: ``a > 1``: mostly zeros, where stable answers half ones;
- ``Contrarian``: the opposite of ``Threshold`` on every row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BrokenInWorker", "Contrarian", "Drifted", "Flaky", "Healthy", "Threshold"]

Arrays = dict[str, npt.NDArray[Any]]


class Threshold:
    supports_batching = True
    cut = 0.0

    def load(self, path: Any) -> None:
        self.path = path

    def predict(self, inputs: Any) -> Arrays:
        a = np.asarray(inputs["a"], dtype=np.float64)
        return {"label": (a > self.cut).astype(np.int64)}


class Flaky(Threshold):
    def predict(self, inputs: Any) -> Arrays:
        a = np.asarray(inputs["a"], dtype=np.float64)
        # about 1 in 20 requests: the third decimal of |a| is a fair die for normal inputs
        if a.size and int(abs(float(a[0])) * 1000) % 20 == 7:  # never the warmup (zeros)
            raise ValueError("flaky: this version fails about 5% of requests")
        return super().predict(inputs)


class Drifted(Threshold):
    cut = 1.0


class Contrarian(Threshold):
    def predict(self, inputs: Any) -> Arrays:
        return {"label": 1 - super().predict(inputs)["label"]}


class Healthy(Threshold):
    """A new version that answers as stable does (its own package: another entrypoint)."""


class BrokenInWorker(Threshold):
    """Loads where it is built, fails to load in every serving worker (a missing GPU, a
    library that differs on the serving machine): it passes every check made at apply."""

    def load(self, path: Any) -> None:
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            raise RuntimeError("this model cannot load on a serving worker")
        super().load(path)

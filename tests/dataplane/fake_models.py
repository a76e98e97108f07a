"""Small python models for worker-pool tests, importable by spawned worker processes.

Each answers ``y = 2x`` and ``pid`` (the worker's process id, one per row) so a test sees
which replica served it. Misbehaviour is triggered by the first input value, so the warmup
(all zeros) always passes: ``999`` hangs, ``-1`` segfaults, ``-2`` raises, ``-3`` answers
one row short.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FakeModel", "load", "load_broken"]

HANG, SEGFAULT, RAISE, SHORT = 999.0, -1.0, -2.0, -3.0


class FakeModel:
    supports_batching = True

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def predict(self, inputs: Any) -> dict[str, npt.NDArray[Any]]:
        x = inputs["x"]
        trigger = float(x.flat[0]) if x.size else 0.0
        if trigger == HANG:
            time.sleep(3600)
        if trigger == SEGFAULT:
            ctypes.string_at(0)
        if trigger == RAISE:
            raise ValueError("negative two is not allowed")
        if self.delay_s:
            time.sleep(self.delay_s)
        rows = len(x) - 1 if trigger == SHORT else len(x)
        return {"y": x[:rows] * 2, "pid": np.full(rows, os.getpid(), dtype=np.int64)}


def load(delay_s: float = 0.0) -> FakeModel:
    return FakeModel(delay_s)


def load_broken() -> FakeModel:
    raise RuntimeError("no model here")

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


# ---------------------------------------------------------------------------- gateway tests
# Classes for the ``python`` runtime: packaged with ``modelplane.registry.build.package``,
# which copies this file into the package, so they may only import installed libraries.
# Misbehaviour is triggered by ``x[0, 0]`` of the batch, so the warmup (zeros) passes.

SLOW, VERY_SLOW, WRONG_SHAPE = 500.0, 999.0, -4.0


class Echo:
    """Takes ``x`` (float32 [-1, 4]), ``n`` (int64), ``s`` (text) and ``b`` (bool); answers
    ``y = 2x``, ``n1 = n + 1``, ``s_up`` (upper case) and ``b_not``.

    ``x[0, 0]``: 500 sleeps 0.3 s, 999 sleeps 1.5 s, -2 raises, -4 answers ``y`` with 3
    columns instead of 4.
    """

    supports_batching = True

    def load(self, path: Any) -> None:
        self.path = path

    def predict(self, inputs: Any) -> dict[str, npt.NDArray[Any]]:
        x = inputs["x"]
        trigger = float(x[0, 0]) if x.size else 0.0
        if trigger == SLOW:
            time.sleep(0.3)
        if trigger == VERY_SLOW:
            time.sleep(1.5)
        if trigger == RAISE:
            raise ValueError("negative two is not allowed")
        y = x * 2 if trigger != WRONG_SHAPE else x[:, :3] * 2
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in inputs["s"].tolist()]
        s_up = np.empty(len(text), dtype=object)
        s_up[:] = [t.upper() for t in text]
        return {
            "y": y.astype(np.float32),
            "n1": inputs["n"].astype(np.int64) + 1,
            "s_up": s_up,
            "b_not": ~inputs["b"].astype(bool),
        }


class SteadyEcho(Echo):
    """``Echo`` that ignores every trigger: a healthy backup for fallback tests."""

    def predict(self, inputs: Any) -> dict[str, npt.NDArray[Any]]:
        x = np.array(inputs["x"], dtype=np.float32)
        if x.size:
            x[0, 0] = 0.0
        return super().predict({**inputs, "x": x})

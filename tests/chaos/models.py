"""Models of the chaos suite, packaged with the ``python`` runtime (this file is copied into
each package, so it imports only the standard library and numpy).

Each answers ``label`` (int64) for inputs ``a`` and ``b`` (float64). In a serving worker,
``load`` names the process after the endpoint it serves (``mpw-alpha``): from outside, the
suite finds an endpoint's workers among ``modelplane up``'s descendants by that name, as an
operator would with ``ps``. The name is set with ``prctl(PR_SET_NAME)``, a system call the
worker sandbox leaves alone, and only in a worker: a package is also loaded where it is
built, and the building process keeps its own name.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Alpha", "AlphaNext", "Beta", "BetaNext", "Gamma", "Steady", "process_name"]

Arrays = dict[str, npt.NDArray[Any]]
PR_SET_NAME = 15


def process_name(endpoint: str) -> str:
    """The name a worker of ``endpoint`` takes (at most 15 bytes: the kernel's limit)."""
    return f"mpw-{endpoint}"[:15]


class Steady:
    """``a + b > 0``: cheap, deterministic, batched."""

    supports_batching = True
    endpoint = "chaos"

    def load(self, path: Any) -> None:
        self.path = path
        if multiprocessing.parent_process() is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_NAME, process_name(self.endpoint).encode(), 0, 0, 0)

    def predict(self, inputs: Any) -> Arrays:
        a = np.asarray(inputs["a"], dtype=np.float64)
        b = np.asarray(inputs["b"], dtype=np.float64)
        return {"label": (a + b > 0).astype(np.int64)}


class Alpha(Steady):
    endpoint = "alpha"


class AlphaNext(Alpha):
    """alpha's next version: the same answers, another package (a rollout's canary)."""


class Beta(Steady):
    endpoint = "beta"


class BetaNext(Beta):
    """beta's next version."""


class Gamma(Steady):
    """Serves ``gamma``, whose ``b`` is joined from the online store (Redis)."""

    endpoint = "gamma"

"""A python job's function that reports what the sandbox left it (tests/backends/jobs)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


class Probe:
    """What makes this file a python-runtime package."""

    def load(self, path: Path) -> None:
        del path

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.asarray(inputs["x"], dtype=np.float64)}


def _can(action: Any) -> bool:
    try:
        action()
    except OSError:
        return False
    return True


def probe(rows: Any, context: Any) -> pa.Table:
    """Whether this shard may write outside its scratch folder or reach the network."""
    target = Path(context.parameters["outside"])
    scratch = Path(context.scratch_dir) / "mine.txt"

    def connect() -> None:
        with socket.create_connection(("127.0.0.1", int(context.parameters["port"])), 2):
            pass

    return pa.table({
        "uid": [os.getuid()],
        "wrote_outside": [_can(lambda: target.write_text("escaped"))],
        "wrote_scratch": [_can(lambda: scratch.write_text("fine"))],
        "reached_network": [_can(connect)],
        "modelplane_env": [sorted(k for k in os.environ if k.startswith("MODELPLANE_"))],
    })  # fmt: skip

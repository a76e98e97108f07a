"""``modelplane status`` with 100 endpoints: the process, as a user runs it (median of 5).

Creates a temporary store with 100 registered versions and 100 endpoints (valid specs,
and the status the endpoint controller writes), then times ``modelplane --version`` (the
full CLI's start-up), ``modelplane status`` and ``modelplane status --json``.

    .venv/bin/python bench/status.py [--endpoints 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelplane.spec.contract import Contract
from modelplane.spec.endpoint import Endpoint, Route
from modelplane.spec.fields import FieldSpec
from modelplane.store.db import open_engine, write_session
from modelplane.store.resources import ResourceStore
from modelplane.store.schema import ModelRow, ModelVersionRow

__all__ = ["main", "populate"]

CLI = str(Path(sys.executable).with_name("modelplane"))
RESULTS = Path(__file__).parent / "results" / "status.json"
AIM_MS = 200.0


def populate(database_url: str, count: int) -> None:
    """``count`` endpoints, each with one registered version and a controller status."""
    engine = open_engine(database_url)
    now = datetime.now(UTC)
    with write_session(engine) as session:
        for i in range(count):
            session.add(ModelRow(name=f"model-{i}", created_at=now, archived=False))
            session.add(
                ModelVersionRow(
                    model_name=f"model-{i}",
                    version=1,
                    digest=f"sha256:{i:064x}",
                    manifest={},
                    runtime="onnx",
                    created_at=now,
                    created_by="bench",
                    archived=False,
                )
            )
    resources = ResourceStore(engine)
    fields = (FieldSpec.model_validate({"name": "x", "dtype": "float32", "shape": [-1, 16]}),)
    for i in range(count):
        endpoint = Endpoint(name=f"endpoint-{i}", team=f"team-{i % 7}",
                            contract=Contract(name=f"contract-{i}", inputs=fields),
                            routes=(Route(model=f"model-{i}@champion"),), replicas=2)  # fmt: skip
        resources.apply("Endpoint", endpoint.name, endpoint.model_dump(mode="json"), actor="bench")
        condition = {"type": "Ready", "status": "True", "reason": "Serving", "message": "",
                     "observed_generation": 1}  # fmt: skip
        status = {"observed_generation": 1, "serving": {f"model-{i}@champion": f"model-{i}:1"},
                  "replicas": {"ready": 2, "total": 2}, "conditions": [condition]}  # fmt: skip
        resources.set_status("Endpoint", endpoint.name, status)
    engine.dispose()


def time_process(args: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of ``modelplane ARGS`` in milliseconds (after one warm-up run)."""
    samples = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        subprocess.run([CLI, *args], env=env, check=True, capture_output=True, timeout=60)
        if attempt:
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelplane-status-bench-") as tmp:
        env = {**os.environ, "MODELPLANE_HOME": tmp}
        populate(f"sqlite:///{tmp}/state.db", opts.endpoints)
        rows = {
            "modelplane --version (full CLI start-up)": time_process(["--version"], env, opts.runs),
            "modelplane status": time_process(["status"], env, opts.runs),
            "modelplane status --json": time_process(["status", "--json"], env, opts.runs),
        }
    out = Table(title=f"modelplane status, {opts.endpoints} endpoints, median of {opts.runs}")
    out.add_column("command")
    out.add_column("ms", justify="right")
    for name, ms in rows.items():
        out.add_row(name, f"{ms:.0f}")
    Console().print(out)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {"endpoints": opts.endpoints, "runs": opts.runs, "aim_ms": AIM_MS, "median_ms": rows}
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

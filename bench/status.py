"""Commands typed in a hurry with 100 endpoints: the process, as a user runs it (median of 5).

Creates a temporary store with 100 registered versions and 100 endpoints (valid specs,
and the status the endpoint controller writes), one of them in a canary rollout, and a kept
prediction, then times ``modelplane --version`` (the full CLI's start-up), ``status`` and
``status --json``, and (issue 12: under 0.5 s each) ``get endpoints``, ``get endpoint NAME
--json``, ``explain REQUEST_ID``, ``pause``, ``resume``, ``promote`` and ``rollback``. The
rollout is put back in its canary step before each rollout command (not timed), so each
one changes something, as it would when typed.

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

from modelplane.observe.predlog import write_predictions
from modelplane.observe.records import LatencySplit, PredictionRecord
from modelplane.spec.contract import Contract
from modelplane.spec.endpoint import Endpoint, Route
from modelplane.spec.fields import FieldSpec
from modelplane.store.db import open_engine, write_session
from modelplane.store.resources import ResourceStore
from modelplane.store.schema import ModelRow, ModelVersionRow

__all__ = ["HURRIED_AIM_MS", "main", "populate", "time_hurried"]

CLI = str(Path(sys.executable).with_name("modelplane"))
RESULTS = Path(__file__).parent / "results" / "status.json"
AIM_MS = 200.0
HURRIED_AIM_MS = 500.0
ROLLOUT_ENDPOINT = "endpoint-0"
REQUEST_ID = "bench-request-1"


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
    rollout = {"rollout": {"endpoint": ROLLOUT_ENDPOINT, "to": "model-1:1",
                           "steps": [{"weight": 10, "hold_s": 600}]},
               "stable": "model-0@champion", "requested_at": 0.0, "commands": []}  # fmt: skip
    resources.apply("Rollout", ROLLOUT_ENDPOINT, rollout, actor="bench")
    latency = LatencySplit(0.2, 1.0, 2.5, 3.9)
    record = PredictionRecord(REQUEST_ID, time.time(), ROLLOUT_ENDPOINT, "contract-0", 1, 200,
                              latency, "model-0:1", f"sha256:{0:064x}")  # fmt: skip
    write_predictions(engine, [record])
    engine.dispose()
    _canary_again(database_url)


def _canary_again(database_url: str) -> None:
    """The rollout back in its canary step, its commands seen, weights 90/10 (not timed)."""
    from modelplane.core.rollout import Phase, RolloutState

    engine = open_engine(database_url)
    state = RolloutState(phase=Phase.CANARY, step=0, weights=(90.0, 10.0))
    resources = ResourceStore(engine)
    commands = len(resources.get("Rollout", ROLLOUT_ENDPOINT).spec["commands"])
    resources.set_status("Rollout", ROLLOUT_ENDPOINT,
                         {"state": state.to_dict(), "commands_seen": commands})  # fmt: skip
    endpoint = resources.get("Endpoint", ROLLOUT_ENDPOINT).spec
    split = [{"model": "model-0@champion", "weight": 90.0}, {"model": "model-1:1", "weight": 10.0}]
    resources.apply("Endpoint", ROLLOUT_ENDPOINT, {**endpoint, "routes": split}, actor="bench")
    engine.dispose()


def _once(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([CLI, *args], env=env, check=True, capture_output=True, timeout=60)
    return (time.perf_counter() - started) * 1000


def time_hurried(database_url: str, env: dict[str, str], runs: int) -> dict[str, float]:
    """Median milliseconds of each command typed in a hurry (after one warm-up run)."""
    samples: dict[str, list[float]] = {}
    reads = {
        "modelplane get endpoints": ["get", "endpoints"],
        "modelplane get endpoint NAME --json": ["get", "endpoint", ROLLOUT_ENDPOINT, "--json"],
        "modelplane explain REQUEST_ID": ["explain", REQUEST_ID],
    }
    for attempt in range(runs + 1):
        for name, args in reads.items():
            ms = _once(args, env)
            if attempt:
                samples.setdefault(name, []).append(ms)
        _canary_again(database_url)
        paused = _once(["pause", ROLLOUT_ENDPOINT], env)
        resumed = _once(["resume", ROLLOUT_ENDPOINT], env)
        _canary_again(database_url)
        promoted = _once(["promote", ROLLOUT_ENDPOINT], env)
        _canary_again(database_url)
        rolled_back = _once(["rollback", ROLLOUT_ENDPOINT], env)
        if attempt:
            for name, ms in (("pause", paused), ("resume", resumed), ("promote", promoted),
                             ("rollback", rolled_back)):  # fmt: skip
                samples.setdefault(f"modelplane {name} E", []).append(ms)
    return {name: statistics.median(values) for name, values in samples.items()}


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
        hurried = time_hurried(f"sqlite:///{tmp}/state.db", env, opts.runs)
    out = Table(
        title=f"commands typed in a hurry, {opts.endpoints} endpoints, median of {opts.runs}"
    )
    out.add_column("command")
    out.add_column("ms", justify="right")
    out.add_column("aim", justify="right")
    for name, ms in rows.items():
        out.add_row(name, f"{ms:.0f}", f"< {AIM_MS:.0f}" if name == "modelplane status" else "")
    for name, ms in hurried.items():
        met = "met" if ms < HURRIED_AIM_MS else "missed"
        out.add_row(name, f"{ms:.0f}", f"< {HURRIED_AIM_MS:.0f} {met}")
    Console().print(out)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {"endpoints": opts.endpoints, "runs": opts.runs, "aim_ms": AIM_MS,
               "hurried_aim_ms": HURRIED_AIM_MS, "median_ms": rows | hurried,
               "loadavg": os.getloadavg()}  # fmt: skip
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Sandbox benchmark: how much later a worker is ready when it is sandboxed.

Two numbers per package (a python-runtime model and an sklearn one), sandboxed and not:
``WorkerPool.start`` to ready (process start through the forkserver, sandbox, package
verification, load, one warmup prediction); and :func:`apply_sandbox` alone, timed in
forked children. Medians of ``--runs`` (sklearn: ``--sklearn-runs``); the two modes
alternate so drift hits both.

    .venv/bin/python bench/sandbox.py [--runs 15] [--sklearn-runs 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from modelplane.dataplane.loader import LOADER
from modelplane.dataplane.pool import PoolConfig, WorkerPool, WorkerSpec
from modelplane.registry.build import BuiltPackage, package
from modelplane.security.sandbox import SandboxPolicy, apply_sandbox, probe

RESULTS = Path(__file__).parent / "results" / "sandbox.json"
console = Console(width=120)

MODEL_PY = """
import numpy as np


class Doubler:
    def load(self, path):
        self.factor = 2.0

    def predict(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * self.factor}
"""


def build_packages(root: Path) -> dict[str, BuiltPackage]:
    """A python-runtime package and an sklearn (skops) one."""
    import importlib.util

    from sklearn.linear_model import LogisticRegression

    source = root / "bench_sandbox_model.py"
    source.write_text(MODEL_PY)
    spec = importlib.util.spec_from_file_location("bench_sandbox_model", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sandbox_model"] = module
    spec.loader.exec_module(module)
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    sample = {"x": x[:2]}
    python = package(module.Doubler, name="doubler", output_dir=root / "python",
                     runtime="python", sample_input=sample)  # fmt: skip
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    sklearn = package(model, name="logreg", output_dir=root / "sklearn", sample_input=x[:2])
    return {"python": python, "sklearn": sklearn}


async def start_once(built: BuiltPackage, sandboxed: bool) -> float:
    policy = None
    if sandboxed:
        memory = built.manifest.resources.memory_mb
        policy = SandboxPolicy().for_package(built.path, memory_mb=memory)
    spec = WorkerSpec(LOADER, args=(str(built.path), str(built.digest)), sandbox=policy)
    pool = WorkerPool(spec, built.manifest.signature, PoolConfig(), name="bench")
    began = time.perf_counter()
    await pool.start()
    elapsed = time.perf_counter() - began
    await pool.stop()
    return elapsed


async def measure(built: BuiltPackage, runs: int) -> dict[bool, list[float]]:
    """Start times, plain and sandboxed, alternating."""
    times: dict[bool, list[float]] = {False: [], True: []}
    await start_once(built, False)  # the forkserver starts once, outside the count
    for _ in range(runs):
        for sandboxed in (False, True):
            times[sandboxed].append(await start_once(built, sandboxed))
    return times


def apply_alone(built: BuiltPackage) -> float:
    """``apply_sandbox`` in a forked child, timed there and sent back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        began = time.perf_counter()
        apply_sandbox(SandboxPolicy().for_package(built.path))
        os.write(write_end, str(time.perf_counter() - began).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        elapsed = float(reader.read())
    os.waitpid(pid, 0)
    return elapsed


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--sklearn-runs", type=int, default=4, help="its imports take seconds")
    opts = parser.parse_args()
    caps = probe()
    with tempfile.TemporaryDirectory(prefix="modelplane-bench-sandbox-") as tmp:
        packages = build_packages(Path(tmp))
        summary: dict[str, Any] = {
            "features": caps.label(),
            "load_average_at_start": round(os.getloadavg()[0], 2),  # this machine is shared
            "packages": {},
        }
        for name, built in packages.items():
            runs = opts.sklearn_runs if name == "sklearn" else opts.runs
            times = asyncio.run(measure(built, runs))
            alone = [apply_alone(built) for _ in range(runs)]
            summary["packages"][name] = {
                "start_ms_plain": median_ms(times[False]),
                "start_ms_sandboxed": median_ms(times[True]),
                "apply_sandbox_ms": median_ms(alone),
                "runs": runs,
            }
    table = Table(title=f"worker start to ready, medians ({caps.label()})")
    columns = ("package", "runs", "plain ms", "sandboxed ms", "difference ms", "apply_sandbox ms")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in summary["packages"].items():
        diff = round(row["start_ms_sandboxed"] - row["start_ms_plain"], 1)
        row["difference_ms"] = diff
        cells = ("start_ms_plain", "start_ms_sandboxed", "difference_ms", "apply_sandbox_ms")
        table.add_row(name, str(row["runs"]), *(str(row[c]) for c in cells))
    console.print(table)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

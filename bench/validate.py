"""Edge validation cost per request: ``CompiledContract.validate`` and ``.coerce``.

This is the price every data-plane request pays before it reaches a model. Contracts:

- ``tensor``: one ``float32 [-1, 16]`` field (a feature matrix, as ONNX models take it);
- ``columns``: 16 ``float64`` columns, each with a range (records JSON, tabular);
- ``mixed``: a float with a range, an int, a string enum, and an optional defaulted float.

Each is timed with 1 row and 64 rows. Reported: microseconds per call (median of
repeated blocks, and the best block). Prints a table and writes
``bench/results/validate.json``. Run: ``.venv/bin/python bench/validate.py``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.core.validate import CompiledContract
from modelplane.spec import FieldSpec, Range

__all__ = ["main"]

Arrays = dict[str, npt.NDArray[Any]]
ROWS = (1, 64)
BLOCKS = 15
RESULTS = Path(__file__).parent / "results" / "validate.json"


def _contracts() -> dict[str, CompiledContract]:
    return {
        "tensor": CompiledContract([FieldSpec(name="x", dtype="float32", shape=(-1, 16))]),
        "columns": CompiledContract(
            [FieldSpec(name=f"f{i}", dtype="float64", range=Range(min=0)) for i in range(16)]
        ),
        "mixed": CompiledContract(
            [
                FieldSpec(name="amount", dtype="float64", range=Range(min=0)),
                FieldSpec(name="count", dtype="int32"),
                FieldSpec(name="country", dtype="string", enum=("FR", "DE", "ES")),
                FieldSpec(name="rate", dtype="float32", default=0.5),
            ]
        ),
    }


def _request(contract: str, rows: int, rng: np.random.Generator) -> Arrays:
    if contract == "tensor":
        return {"x": rng.random((rows, 16), dtype=np.float32)}
    if contract == "columns":
        return {f"f{i}": rng.random(rows) for i in range(16)}
    return {
        "amount": rng.random(rows) * 100,
        "count": rng.integers(0, 10, rows, dtype=np.int32),
        "country": np.array(rng.choice(["FR", "DE", "ES"], rows)),
    }


def _time_us(call: Callable[[], object]) -> tuple[float, float, int]:
    """Median and best microseconds per call over ``BLOCKS`` blocks of about 20 ms."""
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < 0.02:
        call()
        count += 1
    per_block: list[float] = []
    for _ in range(BLOCKS):
        began = time.perf_counter_ns()
        for _ in range(count):
            call()
        per_block.append((time.perf_counter_ns() - began) / count / 1000)
    return statistics.median(per_block), min(per_block), count * BLOCKS


def main() -> None:
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, dict[str, float | int]]] = {}
    print(f"{'contract':<10}{'rows':>6}{'op':>10}{'median µs':>12}{'best µs':>10}")
    for name, compiled in _contracts().items():
        for rows in ROWS:
            inputs = _request(name, rows, rng)
            assert compiled.validate(inputs) == [], name
            for op, call in (("validate", compiled.validate), ("coerce", compiled.coerce)):
                median, best, iterations = _time_us(partial(call, inputs))
                key = f"{name} {rows} row(s)"
                results.setdefault(key, {})[op] = {
                    "median_us": round(median, 3),
                    "best_us": round(best, 3),
                    "iterations": iterations,
                }
                print(f"{name:<10}{rows:>6}{op:>10}{median:>12.2f}{best:>10.2f}")
    report = {
        "benchmark": "edge validation per request (core.validate.CompiledContract)",
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

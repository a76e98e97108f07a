"""Registry benchmark: push and verify a ~200 MB package against `cp` + `sha256sum`.

Also: push throughput of small packages, and `modelplane versions --json` over 10,000
versions. Ratios, not absolute times: this machine is small and noisy.

    .venv/bin/python bench/registry.py [--size-mb 200] [--versions 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from modelplane.registry.digest import seal, verify_package
from modelplane.registry.service import Registry, open_registry
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import Environment, Manifest, ModelFormat, Runtime

RESULTS = Path(__file__).parent / "results"
console = Console(width=120)

MODEL_PY = """
class Model:
    def load(self, path):
        self.path = path

    def predict(self, inputs):
        return inputs
"""


def make_package(folder: Path, name: str, payload_mb: int, seed: int) -> Path:
    """A python-runtime package: model.py plus weight shards of random bytes."""
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL_PY)
    shards = max(1, payload_mb // 50)
    rng_bytes = os.urandom
    for index in range(shards):
        size = (payload_mb * (1 << 20)) // shards
        (folder / f"weights-{index:02d}.bin").write_bytes(
            rng_bytes(size) if payload_mb else seed.to_bytes(8, "little")
        )
    manifest = Manifest(
        name=name,
        runtime=Runtime.PYTHON,
        format=ModelFormat.PYTHON,
        model_file="model.py",
        entrypoint="model:Model",
        signature=Signature(inputs=(FieldSpec(name="x", dtype="float32"),)),
        environment=Environment(python=sys.version.split()[0]),
        labels={"seed": str(seed)},
    )
    seal(folder, manifest)
    return folder


def timed(func: Callable[[], Any], repeat: int) -> float:
    """Median seconds of ``repeat`` runs."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def baseline_copy_and_hash(source: Path, dest_root: Path) -> None:
    dest = dest_root / f"cp-{time.perf_counter_ns()}"
    subprocess.run(["cp", "-r", str(source), str(dest)], check=True)
    files = sorted(str(p) for p in dest.iterdir())
    subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(dest)


def bench_large(work: Path, size_mb: int, repeat: int) -> dict[str, Any]:
    package = make_package(work / "big", "big", size_mb, seed=0)

    def push_fresh() -> None:
        home = work / f"home-{time.perf_counter_ns()}"
        registry = open_registry(
            f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="bench"
        )
        try:
            registry.push(package)
        finally:
            registry.close()
        shutil.rmtree(home)

    def baseline_hash_only() -> None:
        files = sorted(str(p) for p in package.iterdir())
        subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)

    push_fresh()  # warm imports and the page cache alike for both sides
    baseline = timed(lambda: baseline_copy_and_hash(package, work), repeat)
    push_s = timed(push_fresh, repeat)
    hash_s = timed(baseline_hash_only, repeat)
    verify_s = timed(lambda: verify_package(package), repeat)
    return {
        "size_mb": size_mb,
        "cp_sha256sum_s": baseline,
        "push_s": push_s,
        "push_ratio": baseline / push_s,
        "sha256sum_s": hash_s,
        "verify_s": verify_s,
        "verify_ratio": hash_s / verify_s,
    }


def fill_versions(registry: Registry, work: Path, count: int) -> float:
    start = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"pushing {count:,} versions", total=count)
        for index in range(count):
            folder = make_package(work / f"v{index}", "many", 0, seed=index)
            registry.push(folder)
            shutil.rmtree(folder)
            progress.advance(task)
    return count / (time.perf_counter() - start)


def bench_versions(work: Path, count: int) -> dict[str, Any]:
    home = work / "many-home"
    url = f"sqlite:///{home}/state.db"
    registry = open_registry(url, str(home / "artifacts"), actor="bench")
    try:
        pushes_per_s = fill_versions(registry, work, count)
        in_process = timed(lambda: registry.list_versions("many"), 3)
    finally:
        registry.close()
    cli = str(Path(sys.executable).with_name("modelplane"))
    env = {**os.environ, "MODELPLANE_HOME": str(home)}

    def run_cli(*args: str) -> bytes:
        return subprocess.run([cli, *args], check=True, env=env, capture_output=True).stdout

    listed = json.loads(run_cli("versions", "many", "--json"))
    assert len(listed) == count, len(listed)
    return {
        "versions": count,
        "pushes_per_s": pushes_per_s,
        "list_versions_in_process_s": in_process,
        "cli_versions_json_s": timed(lambda: run_cli("versions", "many", "--json"), 3),
        "cli_startup_s": timed(lambda: run_cli("--version"), 3),
    }


def report(large: dict[str, Any], many: dict[str, Any]) -> None:
    out = Table(title="registry benchmark", title_justify="left")
    for column in ("measure", "modelplane", "baseline", "ratio (baseline/ours)"):
        out.add_column(column)
    out.add_row(
        f"push {large['size_mb']} MB (verify+store+register)",
        f"{large['push_s']:.2f} s",
        f"cp+sha256sum {large['cp_sha256sum_s']:.2f} s",
        f"{large['push_ratio']:.2f}",
    )
    out.add_row(
        f"verify {large['size_mb']} MB",
        f"{large['verify_s']:.2f} s",
        f"sha256sum {large['sha256sum_s']:.2f} s",
        f"{large['verify_ratio']:.2f}",
    )
    out.add_row(
        f"push small packages ({many['versions']:,})", f"{many['pushes_per_s']:.0f} /s", "", ""
    )
    out.add_row(
        f"versions --json, {many['versions']:,} versions (CLI process)",
        f"{many['cli_versions_json_s']:.2f} s",
        f"CLI start-up {many['cli_startup_s']:.2f} s",
        "",
    )
    out.add_row("list_versions in process", f"{many['list_versions_in_process_s']:.3f} s", "", "")
    console.print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mp-bench-") as tmp:
        work = Path(tmp)
        large = bench_large(work, args.size_mb, args.repeat)
        many = bench_versions(work, args.versions)
    report(large, many)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "registry.json").write_text(json.dumps({"large": large, "many": many}, indent=2))
    console.print(f"wrote {RESULTS / 'registry.json'}")


if __name__ == "__main__":
    main()

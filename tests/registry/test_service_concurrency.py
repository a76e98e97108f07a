"""Eight processes push at once onto a store none of them has opened before.

That is two races in one: all eight run the migrations together, then all eight allocate
version numbers for the same new model. Two of them push the same bytes as two others,
and must come back with those others' versions.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import queue
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from threading import Barrier

import pytest

from modelplane.registry.digest import seal
from modelplane.registry.service import open_registry
from modelplane.spec import DType, Environment, FieldSpec, Manifest, Signature
from modelplane.spec.manifest import ModelFormat, Runtime

WORKERS = 8
DISTINCT = 6  # workers 6 and 7 push the same bytes as workers 0 and 1


def make_package(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(payload)
    manifest = Manifest(
        name="fraud",
        runtime=Runtime.ONNX,
        format=ModelFormat.ONNX,
        model_file="model.onnx",
        signature=Signature(inputs=(FieldSpec(name="x", dtype=DType.FLOAT32),)),
        environment=Environment(python="3.11"),
    )
    seal(folder, manifest)
    return folder


def push_worker(
    database_url: str,
    artifacts: str,
    package: str,
    start: Barrier,
    results: multiprocessing.queues.Queue[object],
) -> None:
    """Runs in a spawned process: open the store, wait for the others, push once."""
    try:
        start.wait(timeout=60)
        registry = open_registry(database_url, artifacts, actor=f"worker-{package[-1]}")
        try:
            version = registry.push(Path(package))
            results.put((package, version.version, version.digest))
        finally:
            registry.close()
    except BaseException as exc:  # reported to the test, which fails with it
        results.put((package, "error", repr(exc)))


def collect(
    processes: Sequence[BaseProcess],
    results: multiprocessing.queues.Queue[object],
    within_s: float,
) -> list[object]:
    """One result per worker, failing fast (with exit codes) if a worker died silently."""
    outcomes: list[object] = []
    deadline = time.monotonic() + within_s
    while len(outcomes) < len(processes):
        try:
            outcomes.append(results.get(timeout=1))
            continue
        except queue.Empty:
            pass
        codes = [p.exitcode for p in processes]
        if all(code is not None for code in codes) and results.empty():
            pytest.fail(f"{len(processes) - len(outcomes)} workers died silently; exits {codes}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers still running after {within_s}s; exits {codes}")
    return outcomes


@pytest.mark.slow
def test_eight_processes_push_at_once(database_url: str, tmp_path: Path) -> None:
    payloads = [f"weights-{i % DISTINCT}".encode() for i in range(WORKERS)]
    packages = [make_package(tmp_path / f"pkg{i}", p) for i, p in enumerate(payloads)]
    artifacts = str(tmp_path / "artifacts")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    results: multiprocessing.queues.Queue[object] = ctx.Queue()
    processes = [
        ctx.Process(target=push_worker, args=(database_url, artifacts, str(p), start, results))
        for p in packages
    ]
    for process in processes:
        process.start()
    try:
        outcomes = collect(processes, results, within_s=120)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [o for o in outcomes if isinstance(o, tuple) and o[1] == "error"]
    assert errors == []
    by_package = {o[0]: o[1:] for o in outcomes if isinstance(o, tuple)}
    versions = {str(p): by_package[str(p)][0] for p in packages}
    assert sorted(set(versions.values())) == list(range(1, DISTINCT + 1))
    assert versions[str(packages[6])] == versions[str(packages[0])]
    assert versions[str(packages[7])] == versions[str(packages[1])]

    registry = open_registry(database_url, artifacts, actor="checker")
    try:
        listed = registry.list_versions("fraud")
        assert [v.version for v in listed] == list(range(1, DISTINCT + 1))
        assert len({v.digest for v in listed}) == DISTINCT
        assert len(registry.audit_events()) == DISTINCT
        registry.verify_audit()
    finally:
        registry.close()

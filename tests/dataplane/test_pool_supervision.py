"""Supervision that cannot die: the forkserver killed or hung, starts that raise anything,
and the warm template (the forkserver's preload) kept current."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import multiprocessing.forkserver as mp_forkserver
import multiprocessing.process
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from modelplane.dataplane.pool import PoolConfig, ReplicaState, WorkerPool, WorkerSpec, forkserver
from modelplane.spec import FieldSpec, Signature

T = TypeVar("T")
Arrays = dict[str, npt.NDArray[Any]]

SIGNATURE = Signature(
    inputs=(FieldSpec(name="x", dtype="float32", shape=(-1, 4)),),
    outputs=(FieldSpec(name="y", dtype="float32", shape=(-1, 4)),),
)
HERE = Path(__file__).parent
PATHS = (str(HERE),)  # workers import fake_models from here by name


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout_s)

    return asyncio.run(bounded())


def pool(replicas: int = 1, start_timeout_s: float = 20.0) -> WorkerPool:
    config = PoolConfig(
        replicas=replicas,
        start_timeout_s=start_timeout_s,
        backoff_base_s=0.05,
        backoff_max_s=0.2,
        stop_timeout_s=2.0,
    )
    spec = WorkerSpec("fake_models:load", paths=PATHS)
    return WorkerPool(spec, SIGNATURE, config, name="supervised")


def rows(value: float = 1.0) -> Arrays:
    return {"x": np.full((2, 4), value, dtype=np.float32)}


async def wait_until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def ready_pids(p: WorkerPool) -> list[int]:
    return [r.pid for r in p.replicas() if r.state is ReplicaState.READY and r.pid is not None]


def parent_of(pid: int) -> int:
    """The parent pid from /proc (the field after the parenthesised command name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def the_forkserver() -> int:
    """The running forkserver: multiprocessing's record of it, checked against /proc."""
    pid = forkserver.pid()
    assert pid is not None
    assert parent_of(pid) == os.getpid()
    assert "multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_text()
    return pid


@pytest.fixture(autouse=True)
def _no_stopped_forkserver() -> Iterator[None]:
    """A test that stops the forkserver must not leave it stopped for the next one."""
    yield
    pid = forkserver.pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_killed_forkserver_is_replaced_and_the_pool_comes_back_full() -> None:
    async def scenario() -> None:
        p = pool(replicas=2)
        await p.start()
        dead_server = the_forkserver()
        os.kill(dead_server, signal.SIGKILL)
        # the workers it forked keep serving
        await wait_until(lambda: not alive(dead_server))
        out = await p.predict(rows(), 5.0)
        assert int(out["pid"][0]) in ready_pids(p)
        # a worker dies: its restart needs a new forkserver
        victim = ready_pids(p)[0]
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: len(ready_pids(p)) == 2 and victim not in ready_pids(p))
        assert the_forkserver() != dead_server
        served = {int((await p.predict(rows(), 5.0))["pid"][0]) for _ in range(6)}
        assert served <= set(ready_pids(p))
        await p.stop()
        # the workers are the forkserver's children, not ours: they end soon after stop, not
        # necessarily before it returns
        await wait_until(lambda: not any(alive(pid) for pid in (victim, *served)))

    run(scenario)


def test_a_forkserver_that_stops_answering_is_replaced() -> None:
    async def scenario() -> None:
        p = pool(start_timeout_s=10.0)
        await p.start()
        stuck = the_forkserver()
        os.kill(stuck, signal.SIGSTOP)
        (victim,) = ready_pids(p)
        os.kill(victim, signal.SIGKILL)
        # the restart's start blocks on the stopped forkserver until its deadline, which
        # replaces the forkserver; the next try starts the worker from the new one
        await wait_until(lambda: len(ready_pids(p)) == 1 and victim not in ready_pids(p))
        assert the_forkserver() != stuck
        await wait_until(lambda: not alive(stuck))
        out = await p.predict(rows(), 5.0)
        assert int(out["pid"][0]) == ready_pids(p)[0]
        await p.stop()

    run(scenario)


@pytest.mark.parametrize(
    "raised", [EOFError("unexpected EOF"), OSError(24, "Too many open files"), RuntimeError("bug")]
)
def test_a_start_that_raises_anything_is_retried(
    raised: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = multiprocessing.process.BaseProcess.start
    failures = [raised, raised]

    def flaky_start(process: multiprocessing.process.BaseProcess) -> None:
        if failures:
            raise failures.pop()
        start(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", flaky_start)

    async def scenario() -> None:
        p = pool()
        await p.start()
        assert failures == []
        assert len(ready_pids(p)) == 1
        assert p.replicas()[0].state is ReplicaState.READY
        await p.predict(rows(), 5.0)
        await p.stop()

    run(scenario)


def test_revivals_count_returns_from_no_ready_replica() -> None:
    async def scenario() -> None:
        p = pool(replicas=2)
        await p.start()
        assert p.revivals == 1
        first, _ = ready_pids(p)
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: len(ready_pids(p)) == 2 and first not in ready_pids(p))
        assert p.revivals == 1  # one replica served throughout
        third, fourth = ready_pids(p)
        os.kill(third, signal.SIGKILL)
        os.kill(fourth, signal.SIGKILL)
        await wait_until(lambda: not set(ready_pids(p)) & {third, fourth})
        await wait_until(lambda: len(ready_pids(p)) == 2)
        assert p.revivals == 2
        await p.stop()

    run(scenario)


def test_a_larger_preload_replaces_the_template_but_not_the_workers_it_forked() -> None:
    async def scenario() -> None:
        old = pool()
        await old.start()
        first = the_forkserver()
        (worker,) = ready_pids(old)
        forkserver.preload(["_decimal"])
        assert "_decimal" in forkserver.preloaded()
        new = pool()
        await new.start()
        second = the_forkserver()
        assert second != first
        maps = Path(f"/proc/{second}/maps").read_text()
        assert "_decimal" in maps  # the new template imported what it was asked for
        # the old template is retired, not killed: its worker serves on
        assert alive(first)
        assert int((await old.predict(rows(), 5.0))["pid"][0]) == worker
        await asyncio.gather(old.stop(), new.stop())

    run(scenario)


def test_a_preload_that_crashes_the_forkserver_is_given_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server: Any = mp_forkserver._forkserver
    # this test's forkserver state and preload only; the session's come back afterwards
    forkserver.kill_hung()
    monkeypatch.setattr(forkserver, "_state", forkserver._State())
    monkeypatch.setattr(server, "_preload_modules", list(server._preload_modules))
    forkserver.preload(["numpy", "tests.dataplane.broken_preload"])

    async def scenario() -> None:
        p = pool()
        try:
            await p.start()
            assert len(ready_pids(p)) == 1
            await p.predict(rows(), 5.0)
        finally:
            await p.stop()

    try:
        with caplog.at_level(logging.WARNING, logger="modelplane.dataplane.pool"):
            run(scenario)
    finally:
        bare = forkserver.pid()
        forkserver.kill_hung()  # leave no bare forkserver to the tests after this one
        if bare is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(bare, 0)  # SIGKILLed: reaped at once
    assert any(
        "tests.dataplane.broken_preload" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )


_OPENMP_CHILD = """
import multiprocessing as mp
import sys


def work(queue):
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.random.default_rng(0).random((500, 8))
    y = (x[:, 0] > 0.5).astype(int)
    answers = [HistGradientBoostingClassifier(max_iter=3).fit(x, y).predict(x[:5])]
    for name in ("xgboost", "lightgbm"):
        try:
            engine = __import__(name)
        except ImportError:
            continue
        if name == "xgboost":
            booster = engine.train({"nthread": 2}, engine.DMatrix(x, label=y), 3)
            answers.append(booster.predict(engine.DMatrix(x[:5])))
        else:
            model = engine.LGBMClassifier(n_estimators=3, n_jobs=2, verbose=-1).fit(x, y)
            answers.append(model.predict(x[:5]))
    queue.put(len(answers))


if __name__ == "__main__":
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(sys.argv[1:])
    queue = context.Queue()
    child = context.Process(target=work, args=(queue,))
    child.start()
    print("answers", queue.get(timeout=200))
    child.join(10)
"""


@pytest.mark.slow
def test_a_template_with_the_engines_imported_forks_workers_that_use_openmp(
    tmp_path: Path,
) -> None:
    """The engines' native threads do not break a forked child: OpenMP predictions (scikit-
    learn, xgboost, lightgbm) run in a worker forked from a template that imported them."""
    script = tmp_path / "openmp_child.py"
    script.write_text(_OPENMP_CHILD)
    engines = ["numpy", "modelplane.dataplane.pool.warm_sklearn", "xgboost", "lightgbm"]
    done = subprocess.run(
        [sys.executable, str(script), *engines],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = 1 + sum(importlib.util.find_spec(e) is not None for e in ("xgboost", "lightgbm"))
    assert done.stdout.split() == ["answers", str(expected)]

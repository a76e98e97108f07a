from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.batcher import Batcher, BatcherConfig
from modelplane.dataplane.pool import (
    ModelRaised,
    PoolConfig,
    ReplicaState,
    WorkerPool,
    WorkerSpec,
    least_outstanding,
    sample_inputs,
)
from modelplane.errors import DeadlineExceeded, WorkerFailed
from modelplane.spec import FieldSpec, Range, Signature

T = TypeVar("T")
Arrays = dict[str, npt.NDArray[Any]]

SIGNATURE = Signature(
    inputs=(FieldSpec(name="x", dtype="float32", shape=(-1, 4)),),
    outputs=(FieldSpec(name="y", dtype="float32", shape=(-1, 4)),),
)
HERE = Path(__file__).parent
fake_models = kit.fake_models  # registered under its own name: workers import it
"""The same module the workers import by name, from ``paths``, whatever pytest's import mode."""
PATHS = (str(HERE),)
FAST = PoolConfig(start_timeout_s=20.0, backoff_base_s=0.05, backoff_max_s=0.2, stop_timeout_s=2.0)


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout_s)

    return asyncio.run(bounded())


def pool(replicas: int = 1, delay_s: float = 0.0, name: str = "fake") -> WorkerPool:
    config = PoolConfig(
        replicas=replicas,
        start_timeout_s=FAST.start_timeout_s,
        backoff_base_s=FAST.backoff_base_s,
        backoff_max_s=FAST.backoff_max_s,
        stop_timeout_s=FAST.stop_timeout_s,
    )
    spec = WorkerSpec("fake_models:load", kwargs={"delay_s": delay_s}, paths=PATHS)
    return WorkerPool(spec, SIGNATURE, config, name=name)


def rows(value: float, n: int = 2) -> Arrays:
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    x.flat[0] = value
    return {"x": x}


async def wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def ready_pids(p: WorkerPool) -> list[int | None]:
    return [r.pid for r in p.replicas() if r.state is ReplicaState.READY]


def test_predicts_after_warmup() -> None:
    async def scenario() -> None:
        p = pool()
        await p.start()
        (info,) = p.replicas()
        assert info.state is ReplicaState.READY
        assert info.pid is not None
        assert info.pid != os.getpid()
        out = await p.predict(rows(5.0), timeout_s=5.0)
        np.testing.assert_array_equal(out["y"], rows(5.0)["x"] * 2)
        assert out["pid"].tolist() == [info.pid, info.pid]
        await p.stop()

    run(scenario)


def _ignored_signals(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 64) if mask & (1 << (n - 1))}
    raise AssertionError(f"no SigIgn line for pid {pid}")


def test_workers_leave_the_groups_sigint_and_sigterm_to_the_gateway() -> None:
    """Ctrl-C or a service manager's SIGTERM to the process group must not kill workers
    under a draining gateway (which would read as crashes and be restarted)."""

    async def scenario() -> None:
        p = pool()
        await p.start()
        (pid,) = ready_pids(p)
        assert pid is not None
        assert {signal.SIGINT, signal.SIGTERM} <= _ignored_signals(pid)
        await p.stop()

    run(scenario)


_EXIT_WITHOUT_STOP = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from tests.dataplane.test_pool import pool, ready_pids
kept = []

async def main():
    p = pool()
    await p.start()
    kept.append(p)
    print(ready_pids(p)[0], flush=True)

asyncio.run(main())
"""


def test_an_interpreter_that_never_stopped_its_pool_still_exits() -> None:
    """Workers ignore SIGTERM; multiprocessing's exit handler SIGTERMs daemon children and
    waits without a limit, so the pool's own exit hook must kill what was left running."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_WITHOUT_STOP, root],
        capture_output=True, text=True, timeout=60, check=False, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    worker = int(done.stdout.split()[0])
    assert not Path(f"/proc/{worker}").exists() or "Z" in _state(worker)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_sigkill_mid_request_retries_on_another_replica_and_restarts() -> None:
    async def scenario() -> None:
        p = pool(replicas=2, delay_s=0.3)
        await p.start()
        victim = p.replicas()[0].pid
        assert victim is not None
        calls = [asyncio.ensure_future(p.predict(rows(1.0), 5.0)) for _ in range(4)]
        await wait_until(lambda: p.replicas()[0].outstanding > 0)  # the victim holds one
        os.kill(victim, signal.SIGKILL)
        # every call is answered, by the survivor: none waits out its 5 s timeout and fails
        results = await asyncio.gather(*calls)
        survivors = {int(r["pid"][0]) for r in results}
        assert victim not in survivors
        await wait_until(lambda: len(ready_pids(p)) == 2)
        assert victim not in ready_pids(p)
        assert p.restarts == 1
        await p.stop()

    run(scenario)


def test_sigkill_with_one_replica_is_a_typed_error_then_it_restarts() -> None:
    async def scenario() -> None:
        p = pool(delay_s=0.5)
        await p.start()
        (victim,) = ready_pids(p)
        assert victim is not None
        call = asyncio.ensure_future(p.predict(rows(1.0), 5.0))
        await asyncio.sleep(0.1)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerFailed, match="died"):
            await asyncio.wait_for(call, 2.0)
        await wait_until(lambda: len(ready_pids(p)) == 1)
        out = await p.predict(rows(1.0), 5.0)
        assert int(out["pid"][0]) != victim
        await p.stop()

    run(scenario)


def test_segfault_is_detected() -> None:
    async def scenario() -> None:
        p = pool()
        await p.start()
        with pytest.raises(WorkerFailed, match="died"):
            await p.predict(rows(fake_models.SEGFAULT), 5.0)
        await wait_until(lambda: len(ready_pids(p)) == 1)
        assert p.restarts == 1
        await p.stop()

    run(scenario)


def test_hang_past_deadline_is_killed_and_restarted() -> None:
    async def scenario() -> None:
        p = pool()
        await p.start()
        (hung,) = ready_pids(p)
        # the model never answers: only the deadline ends the call (else the test times out)
        with pytest.raises(DeadlineExceeded, match="no answer within"):
            await p.predict(rows(fake_models.HANG), timeout_s=0.3)
        await wait_until(lambda: ready_pids(p) not in ([], [hung]))
        out = await p.predict(rows(1.0), 5.0)
        assert int(out["pid"][0]) != hung
        await p.stop()

    run(scenario)


def test_model_errors_are_typed_and_keep_the_worker() -> None:
    async def scenario() -> None:
        p = pool()
        await p.start()
        before = ready_pids(p)
        with pytest.raises(ModelRaised, match="ValueError: negative two"):
            await p.predict(rows(fake_models.RAISE), 5.0)
        out = await p.predict(rows(fake_models.SHORT, n=3), 5.0)
        assert len(out["y"]) == 2  # the batcher turns this into a contract violation
        assert ready_pids(p) == before
        assert p.restarts == 0
        await p.stop()

    run(scenario)


def test_killing_one_pool_causes_no_error_on_another() -> None:
    async def scenario() -> None:
        victim_pool, steady = pool(name="victim"), pool(replicas=2, name="steady")
        await asyncio.gather(victim_pool.start(), steady.start())
        errors: list[BaseException] = []
        served = 0
        stop = asyncio.Event()

        async def load() -> None:
            nonlocal served
            while not stop.is_set():
                try:
                    await steady.predict(rows(1.0), 2.0)
                    served += 1
                except Exception as exc:
                    errors.append(exc)

        clients = [asyncio.ensure_future(load()) for _ in range(8)]
        for _ in range(3):
            await wait_until(lambda: len(ready_pids(victim_pool)) == 1)
            (pid,) = ready_pids(victim_pool)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*clients)
        assert errors == []
        assert served > 100
        assert victim_pool.restarts >= 2
        assert steady.restarts == 0
        await asyncio.gather(victim_pool.stop(), steady.stop())

    run(scenario, timeout_s=40.0)


def test_requests_go_to_the_least_loaded_replica() -> None:
    async def scenario() -> None:
        p = pool(replicas=2, delay_s=0.2)
        await p.start()
        first = asyncio.ensure_future(p.predict(rows(1.0), 5.0))
        await asyncio.sleep(0.02)
        loads = sorted(r.outstanding for r in p.replicas())
        assert loads == [0, 1]
        second = await p.predict(rows(1.0), 5.0)
        assert int(second["pid"][0]) != int((await first)["pid"][0])
        await p.stop()

    run(scenario)


@pytest.mark.parametrize(
    ("loads", "start", "expected"),
    [([0], 0, 0), ([3, 1, 2], 0, 1), ([1, 1, 1], 0, 0), ([1, 1, 1], 2, 2), ([2, 0, 0], 2, 2)],
)
def test_least_outstanding(loads: list[int], start: int, expected: int) -> None:
    assert least_outstanding(loads, start) == expected


def test_stop_drains_in_flight_requests() -> None:
    async def scenario() -> None:
        p = pool(delay_s=0.3)
        await p.start()
        call = asyncio.ensure_future(p.predict(rows(1.0), 5.0))
        await asyncio.sleep(0.05)
        await p.stop()
        assert call.done()
        assert len((await call)["y"]) == 2
        assert all(r.state is ReplicaState.DEAD for r in p.replicas())

    run(scenario)


def test_a_model_that_cannot_load_fails_start_within_its_timeout() -> None:
    async def scenario() -> None:
        config = PoolConfig(start_timeout_s=3.0, backoff_base_s=0.05, backoff_max_s=0.1)
        spec = WorkerSpec("fake_models:load_broken", paths=PATHS)
        broken = WorkerPool(spec, SIGNATURE, config)
        with pytest.raises(WorkerFailed, match="no model here"):
            await broken.start()

    run(scenario)


def test_sample_inputs_follow_the_signature() -> None:
    signature = Signature(
        inputs=(
            FieldSpec(name="x", dtype="float32", shape=(-1, 3)),
            FieldSpec(name="country", dtype="string", enum=("FR", "DE")),
            FieldSpec(name="age", dtype="int64", range=Range(min=18)),
            FieldSpec(name="flag", dtype="bool"),
            FieldSpec(name="img", dtype="uint8", shape=(-1, -1, 2)),
        )
    )
    sample = sample_inputs(signature, rows=2)
    assert sample["x"].shape == (2, 3)
    assert sample["x"].dtype == np.float32
    assert sample["country"].tolist() == ["FR", "FR"]
    assert sample["age"].tolist() == [18, 18]
    assert sample["flag"].dtype == np.bool_
    assert sample["img"].shape == (2, 1, 2)
    with pytest.raises(ValueError):
        sample_inputs(signature, rows=0)


def test_batcher_on_a_pool_answers_each_caller_its_rows() -> None:
    async def scenario() -> None:
        p = pool(replicas=2)
        await p.start()
        batcher = Batcher(p.predict, BatcherConfig(max_inflight_batches=2))
        rng = np.random.default_rng(7)
        inputs = [{"x": rng.standard_normal((n, 4)).astype(np.float32)} for n in (1, 3, 2) * 20]
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        for x, out in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(out["y"], x["x"] * 2)
        await batcher.stop()
        await p.stop()

    run(scenario)

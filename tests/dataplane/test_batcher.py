from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.batching import BatchingConfig
from modelplane.dataplane.batcher import Batcher, BatcherConfig
from modelplane.errors import ContractViolation, DeadlineExceeded, InvalidSpec, Overloaded

Arrays = dict[str, npt.NDArray[Any]]
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout_s)

    return asyncio.run(bounded())


def model(arrays: Arrays) -> Arrays:
    """A row-wise model: each output row depends on its input row only."""
    x = arrays["x"]
    return {"y": x * 2.0 + arrays["k"][:, None], "s": x.sum(axis=1)}


class Spy:
    """``predict_batch`` that records each batch and can be slowed or broken."""

    def __init__(self, delay_s: float = 0.0, jitter_s: float = 0.0, seed: int = 0) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.fail: Exception | None = None
        self.rows_off_by = 0
        self._random = random.Random(seed)

    async def __call__(self, arrays: Arrays, timeout_s: float) -> Arrays:
        assert timeout_s > 0
        self.batches.append(len(arrays["x"]))
        await asyncio.sleep(self.delay_s + self._random.random() * self.jitter_s)
        if self.fail is not None:
            raise self.fail
        out = model(arrays)
        if self.rows_off_by:
            out["y"] = out["y"][self.rows_off_by :]
        return out


def request(rng: np.random.Generator, rows: int) -> Arrays:
    return {
        "x": rng.standard_normal((rows, 4)).astype(np.float32),
        "k": rng.integers(0, 10, rows).astype(np.float32),
    }


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40),
    max_batch=st.integers(min_value=1, max_value=16),
    inflight=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_batched_equals_unbatched_in_order(
    rows: list[int], max_batch: int, inflight: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    requests = [request(rng, n) for n in rows]
    spy = Spy(delay_s=0.0005, jitter_s=0.001, seed=seed)
    config = BatcherConfig(
        batching=BatchingConfig(max_batch_size=max_batch, max_delay_s=0.002),
        max_inflight_batches=inflight,
        default_timeout_s=10.0,
    )

    async def scenario() -> list[Arrays]:
        batcher = Batcher(spy, config)
        jitter = random.Random(seed)

        async def one(arrays: Arrays) -> Arrays:
            await asyncio.sleep(jitter.random() * 0.002)
            return await batcher.submit(arrays)

        results = await asyncio.gather(*(one(r) for r in requests))
        await batcher.stop()
        return results

    results = run(scenario)
    for arrays, got in zip(requests, results, strict=True):
        want = model(arrays)
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    assert sum(spy.batches) == sum(rows)
    assert all(b <= max(max_batch, *rows) for b in spy.batches)


def test_concurrent_requests_share_batches() -> None:
    spy = Spy(delay_s=0.005)
    config = BatcherConfig(batching=BatchingConfig(max_batch_size=32, max_delay_s=0.05))
    rng = np.random.default_rng(1)

    async def scenario() -> None:
        batcher = Batcher(spy, config)
        await asyncio.gather(*(batcher.submit(request(rng, 1)) for _ in range(64)))
        assert batcher.mean_batch_rows > 1
        await batcher.stop()

    run(scenario)
    assert len(spy.batches) < 64
    assert max(spy.batches) <= 32


def test_lone_request_is_sent_without_waiting_for_the_window() -> None:
    spy = Spy()
    config = BatcherConfig(batching=BatchingConfig(max_batch_size=8, max_delay_s=5.0))

    async def scenario() -> None:
        batcher = Batcher(spy, config)
        await asyncio.wait_for(batcher.submit(request(np.random.default_rng(), 1)), 1.0)
        await batcher.stop()

    run(scenario)


def test_error_reaches_every_request_of_the_batch() -> None:
    spy = Spy(delay_s=0.01)
    spy.fail = RuntimeError("boom")
    rng = np.random.default_rng(2)

    async def scenario() -> list[BaseException | Arrays]:
        batcher = Batcher(spy, BatcherConfig(batching=BatchingConfig(max_delay_s=0.05)))
        out = await asyncio.gather(
            *(batcher.submit(request(rng, 2)) for _ in range(5)), return_exceptions=True
        )
        await batcher.stop()
        return out

    results = run(scenario)
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)


def test_wrong_row_count_is_a_contract_violation() -> None:
    spy = Spy()
    spy.rows_off_by = 1

    async def scenario() -> None:
        batcher = Batcher(spy)
        with pytest.raises(ContractViolation, match="wrong number of rows"):
            await batcher.submit(request(np.random.default_rng(), 3))
        await batcher.stop()

    run(scenario)


def test_full_queue_sheds_with_retry_after() -> None:
    spy = Spy(delay_s=0.05)
    config = BatcherConfig(
        batching=BatchingConfig(max_batch_size=4, max_delay_s=0.001), max_queue_rows=12
    )
    rng = np.random.default_rng(3)

    async def scenario() -> None:
        batcher = Batcher(spy, config)
        running = [asyncio.ensure_future(batcher.submit(request(rng, 4)))]
        await asyncio.sleep(0.01)  # that batch runs for 50 ms
        running += [asyncio.ensure_future(batcher.submit(request(rng, 4))) for _ in range(2)]
        await asyncio.sleep(0)
        assert batcher.queued_rows == 8
        with pytest.raises(Overloaded) as info:
            await batcher.submit(request(rng, 5))
        assert 0 < info.value.retry_after_s <= 5.0
        await asyncio.gather(*running)
        await batcher.stop()

    run(scenario)


def test_expired_request_is_failed_and_never_sent() -> None:
    spy = Spy(delay_s=0.1)
    rng = np.random.default_rng(4)
    config = BatcherConfig(batching=BatchingConfig(max_batch_size=1, max_delay_s=0.0))

    async def scenario() -> None:
        batcher = Batcher(spy, config)
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(batcher.submit(request(rng, 1)))
        await asyncio.sleep(0.01)
        # queued behind a 100 ms batch with a 20 ms deadline: it must never reach the model
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(request(rng, 1), deadline=loop.time() + 0.02)
        await first
        await asyncio.sleep(0.02)
        await batcher.stop()

    run(scenario)
    assert spy.batches == [1]


def test_deadline_in_the_past_is_refused_at_once() -> None:
    async def scenario() -> None:
        batcher = Batcher(Spy())
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(request(np.random.default_rng(), 1), deadline=0.0)
        await batcher.stop()

    run(scenario)


def test_slow_batch_gives_deadline_exceeded() -> None:
    spy = Spy(delay_s=1.0)

    async def scenario() -> None:
        batcher = Batcher(spy, BatcherConfig(default_timeout_s=0.05))
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(request(np.random.default_rng(), 1))
        await batcher.stop(timeout_s=0.1)

    run(scenario)


def test_different_layouts_are_not_joined() -> None:
    spy = Spy(delay_s=0.01)
    rng = np.random.default_rng(5)
    config = BatcherConfig(batching=BatchingConfig(max_batch_size=64, max_delay_s=0.02))

    async def scenario() -> None:
        batcher = Batcher(spy, config)
        wide = {"x": rng.standard_normal((1, 6)).astype(np.float32), "k": np.ones(1, np.float32)}
        results = await asyncio.gather(
            batcher.submit(request(rng, 1)), batcher.submit(wide), batcher.submit(request(rng, 1))
        )
        assert results[1]["y"].shape == (1, 6)
        await batcher.stop()

    run(scenario)


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({}, "at least one input"),
        ({"x": np.float32(1.0) * np.ones(())}, "no batch dimension"),
        ({"x": np.ones((2, 4)), "k": np.ones(3)}, "disagree on the row count"),
    ],
)
def test_malformed_inputs_are_refused(inputs: Arrays, problem: str) -> None:
    async def scenario() -> None:
        batcher = Batcher(Spy())
        with pytest.raises(InvalidSpec, match=problem):
            await batcher.submit(inputs)
        await batcher.stop()

    run(scenario)


def test_stop_drains_then_refuses() -> None:
    spy = Spy(delay_s=0.01)
    rng = np.random.default_rng(6)
    config = BatcherConfig(batching=BatchingConfig(max_batch_size=2, max_delay_s=1.0))

    async def scenario() -> None:
        batcher = Batcher(spy, config)
        running = [asyncio.ensure_future(batcher.submit(request(rng, 1))) for _ in range(7)]
        await asyncio.sleep(0)
        await batcher.stop()
        assert all(t.done() and not t.exception() for t in running)
        with pytest.raises(Overloaded, match="stopping"):
            await batcher.submit(request(rng, 1))

    run(scenario)
    assert sum(spy.batches) == 7

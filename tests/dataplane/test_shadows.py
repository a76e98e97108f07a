"""Shadow copies travel coalesced: one worker call for many copies, each still counted."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from tests.dataplane import gateway_kit as kit
from tests.dataplane.test_gateway_shadows import PATH, row, shadowed
from tests.kit import wait_for

from modelplane.dataplane.server import ServerThread
from modelplane.dataplane.shadows import _concatenate

pytestmark = pytest.mark.timeout(120)


def test_copies_concatenate_only_when_shapes_agree() -> None:
    a: dict[str, npt.NDArray[Any]] = {"x": np.zeros((1, 4), np.float32), "n": np.zeros(1, np.int64)}
    b: dict[str, npt.NDArray[Any]] = {"x": np.ones((2, 4), np.float32), "n": np.ones(2, np.int64)}
    joined = _concatenate([a, b])
    assert joined is not None
    assert joined["x"].shape == (3, 4)
    assert joined["n"].tolist() == [0, 1, 1]
    assert _concatenate([a, {"x": np.ones((1, 3), np.float32), "n": b["n"][:1]}]) is None
    assert _concatenate([a, {"x": a["x"]}]) is None  # an optional input absent from one


def test_many_copies_go_in_few_batches_and_each_is_counted() -> None:
    with ServerThread([shadowed("echo", "steady")], config=kit.gateway_config()) as server:

        def call(_: int) -> int:
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                return sum(http.post(PATH, json=row(7.0)).status_code == 200 for _ in range(25))

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(call, range(8))) == 200
        shadow = server.gateway.handler.endpoints["echo"].shadows[0]
        wait_for(lambda: shadow.comparison.compared == 200, 10, "200 comparisons")
        assert shadow.target.stats.snapshot().requests == 200
        time.sleep(0.1)
        batches = server.gateway.metrics.batch_rows["steady:1"]
        assert batches.total == 200  # rows
        assert sum(batches.counts) < 200  # calls: copies were coalesced

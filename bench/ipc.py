"""Gateway <-> worker IPC: pipes against shared memory, for the tensors we actually send.

Each transport runs a round trip (request tensors to a worker process, the same tensors
back, as an echo model would) and we time it from the gateway side:

- ``pipe+pickle``: ``multiprocessing.connection`` with pickle protocol 5 (what most
  Python servers do);
- ``pipe+frames``: our framing (``dataplane/pool/messages.py``): a msgpack header then raw
  tensor bytes, decoded with ``np.frombuffer``; nothing unpickled;
- ``shm+pipe``: tensor bytes written into a ``multiprocessing.shared_memory`` block per
  direction, only the msgpack header (names, dtypes, shapes, offsets) over the pipe.

- ``pool (asyncio)``: the whole path a request takes, ``WorkerPool.predict`` on an echo
  model: asyncio pipe transports, framing, a future per id, the worker's loop.

Payloads: 1 row x 16 float32, 64 rows x 16 float32, and a 1 MiB float32 tensor.
Prints a table and writes ``bench/results/ipc.json``. Run: ``.venv/bin/python bench/ipc.py``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import pickle
import platform
import statistics
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

# run as a script, only bench/ is on sys.path; bench._common lives under the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ECHO_LOADER, ECHO_PATHS
from modelplane.dataplane.pool import PoolConfig, WorkerPool, WorkerSpec
from modelplane.dataplane.pool.messages import Op, decode, encode
from modelplane.spec import FieldSpec, Signature

__all__ = ["main"]

Arrays = dict[str, npt.NDArray[Any]]
SHM_BYTES = 8 << 20
PAYLOADS: dict[str, Arrays] = {
    "1x16 f32": {"x": np.ones((1, 16), np.float32)},
    "64x16 f32": {"x": np.ones((64, 16), np.float32)},
    "1 MiB f32": {"x": np.ones((512, 512), np.float32)},
}


class ShmTensor(msgspec.Struct, array_like=True):
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def shm_put(shm: SharedMemory, arrays: Arrays) -> bytes:
    metas: list[ShmTensor] = []
    offset = 0
    buf = shm.buf
    assert buf is not None
    for name, array in arrays.items():
        src = np.ascontiguousarray(array)
        dst = np.ndarray(src.shape, src.dtype, buffer=buf, offset=offset)
        dst[...] = src
        metas.append(ShmTensor(name, src.dtype.str, src.shape, offset, src.nbytes))
        offset += (src.nbytes + 63) & ~63
    return msgspec.msgpack.encode(metas)


def shm_get(shm: SharedMemory, header: bytes) -> Arrays:
    metas = msgspec.msgpack.decode(header, type=list[ShmTensor])
    return {
        m.name: np.ndarray(m.shape, np.dtype(m.dtype), buffer=shm.buf, offset=m.offset)
        for m in metas
    }


def worker(kind: str, inbox: Connection, outbox: Connection, shm_names: tuple[str, str]) -> None:
    shm_in = shm_out = None
    if kind == "shm+pipe":
        shm_in, shm_out = SharedMemory(shm_names[0]), SharedMemory(shm_names[1])
    while True:
        try:
            data = inbox.recv_bytes()
        except EOFError:
            break
        if kind == "pipe+pickle":
            _op, rid, arrays = pickle.loads(data)
            outbox.send_bytes(pickle.dumps((Op.RESULT, rid, arrays), protocol=5))
        elif kind == "pipe+frames":
            msg = decode(data)
            outbox.send_bytes(b"".join(encode(Op.RESULT, msg.id, msg.arrays)))
        else:
            assert shm_in is not None
            assert shm_out is not None
            arrays = shm_get(shm_in, data)
            outbox.send_bytes(shm_put(shm_out, arrays))
            del arrays
    for shm in (shm_in, shm_out):
        if shm is not None:
            shm.close()


def round_trip(kind: str, to_w: Connection, from_w: Connection, shms: Any, arrays: Arrays) -> None:
    if kind == "pipe+pickle":
        to_w.send_bytes(pickle.dumps((Op.PREDICT, 1, arrays), protocol=5))
        _, _, out = pickle.loads(from_w.recv_bytes())
    elif kind == "pipe+frames":
        to_w.send_bytes(b"".join(encode(Op.PREDICT, 1, arrays)))
        out = decode(from_w.recv_bytes()).arrays
    else:
        to_w.send_bytes(shm_put(shms[0], arrays))
        # the gateway must own its result before the slot is reused: copy it out
        out = {k: v.copy() for k, v in shm_get(shms[1], from_w.recv_bytes()).items()}
    assert out["x"].shape == arrays["x"].shape


def measure(kind: str, iterations: int) -> dict[str, dict[str, float]]:
    ctx = mp.get_context("spawn")
    shms = (SharedMemory(create=True, size=SHM_BYTES), SharedMemory(create=True, size=SHM_BYTES))
    to_worker_r, to_worker_w = ctx.Pipe(duplex=False)
    from_worker_r, from_worker_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=worker,
        args=(kind, to_worker_r, from_worker_w, (shms[0].name, shms[1].name)),
        daemon=True,
    )
    proc.start()
    to_worker_r.close()
    from_worker_w.close()
    results: dict[str, dict[str, float]] = {}
    try:
        for label, arrays in PAYLOADS.items():
            n = iterations if arrays["x"].nbytes < 100_000 else max(200, iterations // 20)
            for _ in range(min(200, n)):
                round_trip(kind, to_worker_w, from_worker_r, shms, arrays)
            samples = []
            for _ in range(n):
                start = time.perf_counter_ns()
                round_trip(kind, to_worker_w, from_worker_r, shms, arrays)
                samples.append((time.perf_counter_ns() - start) / 1000)
            results[label] = _summary(samples)
    finally:
        to_worker_w.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        from_worker_r.close()
        for shm in shms:
            shm.close()
            shm.unlink()
    return results


_HERE = Path(__file__).resolve().parent


async def _pool_round_trips(iterations: int) -> dict[str, dict[str, float]]:
    signature = Signature(inputs=(FieldSpec(name="x", dtype="float32", shape=(-1, 16)),))
    spec = WorkerSpec(ECHO_LOADER, paths=ECHO_PATHS)
    pool = WorkerPool(spec, signature, PoolConfig())
    await pool.start()
    results: dict[str, dict[str, float]] = {}
    try:
        for label, arrays in PAYLOADS.items():
            n = iterations if arrays["x"].nbytes < 100_000 else max(200, iterations // 20)
            samples = []
            for i in range(n + min(200, n)):
                start = time.perf_counter_ns()
                await pool.predict(arrays, 5.0)
                if i >= min(200, n):
                    samples.append((time.perf_counter_ns() - start) / 1000)
            results[label] = _summary(samples)
    finally:
        await pool.stop()
    return results


def _summary(samples: list[float]) -> dict[str, float]:
    samples.sort()
    return {
        "p50_us": statistics.median(samples),
        "p99_us": samples[int(len(samples) * 0.99) - 1],
        "mean_us": statistics.fmean(samples),
        "iterations": len(samples),
    }


def main(iterations: int = 5000) -> dict[str, Any]:
    kinds = ("pipe+pickle", "pipe+frames", "shm+pipe")
    table = {kind: measure(kind, iterations) for kind in kinds}
    table["pool (asyncio)"] = asyncio.run(_pool_round_trips(iterations))
    print(f"{'round trip (us)':<16}" + "".join(f"{p:>24}" for p in PAYLOADS))
    print(f"{'':<16}" + "".join(f"{'p50':>12}{'p99':>12}" for _ in PAYLOADS))
    for kind, rows in table.items():
        cells = "".join(f"{rows[p]['p50_us']:>12.1f}{rows[p]['p99_us']:>12.1f}" for p in PAYLOADS)
        print(f"{kind:<16}{cells}")
    report = {
        "benchmark": "ipc round trip, gateway -> worker -> gateway, echo",
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
        "results": table,
    }
    out = _HERE / "results" / "ipc.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()

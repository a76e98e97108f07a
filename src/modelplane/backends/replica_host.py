"""The inside of a replica, wherever it runs: load the model, answer framed batches.

The same host runs in a replica's own process (``backends.replica_child``), which the local
backend starts and a Ray actor starts on its node. It serves one batch at a time, from any
number of connections, behind a lock: a replica computes serially, like a local worker, and
its concurrency is its count.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from modelplane.backends.wire import (
    Frame,
    FrameBuffer,
    Op,
    decode,
    encode,
    read_frame,
    secret_matches,
    write_frame,
)
from modelplane.core.backend import Arrays, ReplicaSpec
from modelplane.runtime.base import LoadedModel
from modelplane.runtime.loading import load_model_from, predict_checked

__all__ = ["ReplicaHost", "load_model"]

_log = logging.getLogger("modelplane.backends.replica")


def load_model(spec: ReplicaSpec) -> LoadedModel:
    """Import the loader and call it; check the result looks like a loaded model."""
    return load_model_from(spec.loader, spec.args, spec.kwargs, spec.paths)


class ReplicaHost:
    """A loaded model and the socket it answers on."""

    def __init__(self, spec: ReplicaSpec, secret: str, warmup: Arrays | None = None) -> None:
        self._model = load_model(spec)
        self._secret = secret
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        if warmup is not None:
            self.predict(warmup)

    def predict(self, arrays: Arrays) -> Arrays:
        with self._lock:
            return predict_checked(self._model, arrays)

    def answer(self, frame: Frame) -> list[bytes | memoryview]:
        """The reply to one request frame."""
        if frame.op is Op.PING:
            return encode(Op.PONG, frame.id, pid=os.getpid())
        if frame.op is not Op.PREDICT:
            return encode(Op.ERROR, frame.id, error=f"unexpected op {frame.op}", error_type="Op")
        try:
            return encode(Op.RESULT, frame.id, self.predict(frame.arrays))
        except Exception as exc:
            return encode(Op.ERROR, frame.id, error=str(exc), error_type=type(exc).__name__)

    def answer_bytes(self, data: bytes) -> bytes:
        """One framed request in, one framed reply out (the Ray actor-call path)."""
        return b"".join(self.answer(decode(memoryview(data)[4:])))

    def listen(self, host: str) -> int:
        """Open the replica's socket on ``host`` (an ephemeral port) and serve it in threads."""
        return self.serve(socket.create_server((host, 0), backlog=64))

    def serve(self, listener: socket.socket) -> int:
        """Serve a socket opened already (a sandboxed process may not open one); its port."""
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                # A bound on the greeting: a peer that connects and says nothing holds no thread.
                conn.settimeout(10.0)
                hello = read_frame(conn)
                if not secret_matches(hello, self._secret):
                    _log.warning("refused a connection without the replica's secret")
                    return
                conn.settimeout(None)
                write_frame(conn, encode(Op.HELLO, 0, pid=os.getpid()))
                frames = FrameBuffer()
                # Requests that arrived together are answered with one write.
                while data := conn.recv(1 << 16):
                    replies = [
                        part for raw in frames.feed(data) for part in self.answer(decode(raw))
                    ]
                    if replies:
                        conn.sendall(b"".join(replies))
            except (OSError, EOFError, ValueError):
                return

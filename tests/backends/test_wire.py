"""The replica socket's framing: tensors round trip without copies or pickle, frames split
and joined however the stream delivers them, and a bad length is refused."""

from __future__ import annotations

import numpy as np
import pytest

from modelplane.backends.wire import MAX_FRAME, FrameBuffer, Op, decode, encode, secret_matches


def joined(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(parts)


def test_tensors_and_text_round_trip() -> None:
    arrays = {
        "x": np.arange(12, dtype=np.float32).reshape(3, 4),
        "ids": np.array([7, 8, 9], dtype=np.int64),
        "who": np.array(["ann", "bo"], dtype=object),
    }
    frame = decode(joined(encode(Op.PREDICT, 42, arrays))[4:])
    assert (frame.op, frame.id) == (Op.PREDICT, 42)
    np.testing.assert_array_equal(frame.arrays["x"], arrays["x"])
    assert frame.arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(frame.arrays["ids"], arrays["ids"])
    assert frame.arrays["who"].tolist() == ["ann", "bo"]


def test_frames_come_out_whole_however_the_stream_cuts_them() -> None:
    stream = b"".join(
        joined(encode(Op.RESULT, i, {"y": np.full((2,), i, dtype=np.int32)})) for i in range(5)
    )
    buffer = FrameBuffer()
    out = []
    for start in range(0, len(stream), 7):  # seven bytes at a time: frames cut anywhere
        out += [decode(raw) for raw in buffer.feed(stream[start : start + 7])]
    assert [f.id for f in out] == [0, 1, 2, 3, 4]
    assert [int(f.arrays["y"][0]) for f in out] == [0, 1, 2, 3, 4]
    many = FrameBuffer().feed(stream)  # and all at once
    assert len(many) == 5


def test_a_length_past_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="over the"):
        FrameBuffer().feed((MAX_FRAME + 1).to_bytes(4, "big") + b"xx")


def test_the_greeting_must_carry_the_secret() -> None:
    hello = decode(joined(encode(Op.HELLO, 0, error="s3cret"))[4:])
    assert secret_matches(hello, "s3cret")
    assert not secret_matches(hello, "guess")
    ping = decode(joined(encode(Op.PING, 0, error="s3cret"))[4:])
    assert not secret_matches(ping, "s3cret")

"""One frame of tensors: round trips without a copy or pickle, text in the header, empty and
0-d arrays keep their shape, and a frame cut short is refused naming the tensor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelplane.core.tensor_frames import Op, decode, encode


def joined(arrays: dict[str, Any] | None, **fields: Any) -> bytes:
    return b"".join(encode(Op.RESULT, 41, arrays, **fields))


def test_tensors_and_the_header_round_trip() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.array([5, 6, 7], dtype=np.int64)
    fields = {"error": "e", "error_type": "T", "pid": 99, "sandbox": "no network"}
    frame = decode(joined({"x": x, "ids": ids, "who": np.array(["ann", "bo"])}, **fields))
    assert (frame.op, frame.id) == (Op.RESULT, 41)
    assert frame.op is Op.RESULT
    assert (frame.error, frame.error_type, frame.pid, frame.sandbox) == ("e", "T", 99, "no network")
    assert list(frame.arrays) == ["x", "ids", "who"]
    np.testing.assert_array_equal(frame.arrays["x"], x)
    assert frame.arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(frame.arrays["ids"], ids)
    assert frame.arrays["who"].tolist() == ["ann", "bo"]


def test_arrays_are_views_of_the_frame_not_copies() -> None:
    data = bytearray(joined({"x": np.ones((4, 4), np.float64)}))
    frame = decode(data)
    data[-8:] = np.float64(3.5).tobytes()  # the last element, written in the frame itself
    assert frame.arrays["x"][3, 3] == 3.5


def test_a_contiguous_array_is_sent_without_a_copy_and_a_strided_one_is_made_whole() -> None:
    x = np.arange(16, dtype=np.int32).reshape(4, 4)
    _, buffer, strided = encode(Op.PREDICT, 1, {"x": x, "column": x[:, 1]})
    assert np.shares_memory(np.frombuffer(buffer, np.int32), x)
    assert np.frombuffer(strided, np.int32).tolist() == [1, 5, 9, 13]
    assert decode(b"".join(encode(Op.PREDICT, 1, {"column": x[:, 1]}))).arrays["column"].shape == (
        4,
    )


def test_lists_scalars_and_empty_batches_keep_their_shape() -> None:
    empty = np.ones((0, 3), np.float32)
    arrays = decode(joined({"row": [1.0, 2.0], "n": 3, "empty": empty})).arrays
    assert arrays["row"].tolist() == [1.0, 2.0]
    assert (arrays["n"].shape, int(arrays["n"])) == ((), 3)
    assert (arrays["empty"].shape, arrays["empty"].dtype) == ((0, 3), np.dtype(np.float32))


def test_a_frame_cut_short_is_refused_naming_the_tensor() -> None:
    data = joined({"x": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match="'x' runs past the end"):
        decode(data[:-4])


def test_no_tensors_is_a_header_alone() -> None:
    frame = decode(joined(None))
    assert (frame.op, frame.arrays, frame.error, frame.pid) == (Op.RESULT, {}, "", 0)


def test_a_length_prefix_for_a_byte_stream_counts_the_rest_of_the_frame() -> None:
    parts = encode(Op.PING, 3, {"x": np.ones(5, np.int16), "who": ["ann"]}, length_prefix=True)
    data = b"".join(parts)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    frame = decode(data[4:])
    assert (frame.op, frame.id, frame.arrays["x"].tolist()) == (Op.PING, 3, [1] * 5)

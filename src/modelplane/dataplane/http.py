"""The HTTP edge's one table from error codes to statuses, and the two error body shapes.

Open Inference Protocol v2 routes answer ``{"error": "<message>"}``; everything else answers
``{"error": {"code", "message", "details"}}``. The message is the same in both. Also the
small parsers of the edge: v2 model paths, methods, timeouts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import msgspec

from modelplane.errors import (
    HTTP_STATUS,
    InvalidSpec,
    ModelplaneError,
    NotReady,
    Overloaded,
    PayloadTooLarge,
)

__all__ = [
    "STATUS_BY_CODE",
    "V2_MODELS",
    "HttpError",
    "deadline_of",
    "error_body",
    "error_code",
    "error_headers",
    "expect_method",
    "lower_timeout",
    "model_path",
    "read_body",
    "status_of",
]

STATUS_BY_CODE = HTTP_STATUS
V2_MODELS = "/v2/models/"
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


_ENCODER = msgspec.json.Encoder()


class HttpError(ModelplaneError):
    """An error that exists only at the HTTP edge (bad method, body too large, not ready)."""

    def __init__(self, code: str, message: str, *, details: list[dict[str, Any]] | None = None):
        super().__init__(message, details=details or ())
        self.http_code = code

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.http_code, "message": self.message, "details": self.details}


def _code(exc: ModelplaneError) -> str:
    return exc.http_code if isinstance(exc, HttpError) else exc.code


def status_of(exc: ModelplaneError) -> int:
    return STATUS_BY_CODE.get(_code(exc), 500)


def error_code(exc: ModelplaneError) -> str:
    return _code(exc)


def error_body(exc: ModelplaneError, *, v2: bool) -> bytes:
    if v2:
        return _ENCODER.encode({"error": exc.message})
    return _ENCODER.encode({"error": exc.to_dict()})


def error_headers(exc: ModelplaneError) -> list[tuple[bytes, bytes]]:
    """Extra headers an error brings: ``Retry-After`` (whole seconds, at least 1) on 429 and
    on 503 for an endpoint that is not ready yet; ``connection: close`` on 413."""
    if isinstance(exc, Overloaded | NotReady):
        return [(b"retry-after", str(max(1, math.ceil(exc.retry_after_s))).encode())]
    if isinstance(exc, PayloadTooLarge):
        # the body may be partly unread: close rather than read it only to drop it
        return [(b"connection", b"close")]
    return []


def model_path(path: str) -> tuple[str, str | None, str]:
    """``(name, version, action)`` of ``/v2/models/{name}[/versions/{v}][/{action}]``."""
    parts = path[len(V2_MODELS) :].split("/")
    name, version = parts[0], None
    if len(parts) >= 3 and parts[1] == "versions":
        version = parts[2]
        parts = parts[2:]
    action = parts[1] if len(parts) == 2 else ""
    if len(parts) > 2 or action not in ("", "ready", "infer") or not name or version == "":
        raise HttpError("not_found", f"no route for {path}")
    return name, version, action


def expect_method(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError("method_not_allowed", f"use {allowed}, not {method}")


def lower_timeout(current: float | None, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidSpec(
            "parameters.timeout must be a positive number of milliseconds",
            details=[{"field": "parameters.timeout", "problem": f"got {value!r}"}],
        )
    return float(value) if current is None else min(current, float(value))


def deadline_of(timeout_ms: float | None) -> float | None:
    if timeout_ms is None:
        return None
    if not (timeout_ms > 0 and math.isfinite(timeout_ms)):
        raise InvalidSpec("the timeout must be a positive, finite number of milliseconds")
    return time.monotonic() + timeout_ms / 1000


async def read_body(receive: Receive, content_length: int | None, limit: int) -> bytes:
    """The whole request body, refused past ``limit`` bytes (before reading when declared).

    A declared length is read into one buffer of that size, so a large body is held once,
    not once in pieces and again joined."""
    if content_length is not None and content_length > limit:
        raise _too_large(limit)
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    if content_length is not None and len(body) <= content_length:
        return await _read_into(receive, body, content_length)
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError("invalid_spec", "the client went away mid-body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_into(receive: Receive, first: bytes, length: int) -> bytes:
    buffer = bytearray(length)
    view = memoryview(buffer)
    size = len(first)
    view[:size] = first
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError("invalid_spec", "the client went away mid-body")
        chunk: bytes = message.get("body", b"")
        end = size + len(chunk)
        if end > length:  # the parser holds to the declared length; never trust it blindly
            raise HttpError("invalid_spec", "the body is longer than its content-length")
        view[size:end] = chunk
        size = end
        more = message.get("more_body", False)
    view.release()
    if size != length:
        raise HttpError("invalid_spec", "the body is shorter than its content-length")
    # Every reader of a body (msgspec, memoryview, numpy, pickle) takes a bytearray as it
    # takes bytes; converting would hold the body twice.
    return cast(bytes, buffer)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is over the limit of {limit} bytes",
        details=[{"field": "body", "problem": f"over max_body_bytes ({limit} bytes)"}],
    )

"""The HTTP edge's one table from error codes to statuses, and the two error body shapes.

Open Inference Protocol v2 routes answer ``{"error": "<message>"}``; everything else answers
``{"error": {"code", "message", "details"}}``. The message is the same in both.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from modelplane.errors import HTTP_STATUS, ModelplaneError, Overloaded

__all__ = [
    "STATUS_BY_CODE",
    "HttpError",
    "error_body",
    "error_code",
    "error_headers",
    "status_of",
]

STATUS_BY_CODE = HTTP_STATUS


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
    """Extra headers an error brings: ``Retry-After`` (whole seconds, at least 1) on 429."""
    if isinstance(exc, Overloaded):
        return [(b"retry-after", str(max(1, math.ceil(exc.retry_after_s))).encode())]
    return []

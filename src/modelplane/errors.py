"""The one exception tree of modelplane.

Every error carries a stable ``code`` that edges (HTTP, CLI) map to a status or an exit
code in one table; domain code never imports a web framework. Subclasses also inherit the
builtin they resemble, so ``except LookupError`` keeps working for callers who know Python
but not modelplane.

    ModelplaneError
    ├── InvalidSpec (ValueError)            code=invalid_spec
    │   ├── ContractViolation               code=contract_violation
    │   └── MalformedRequest                code=malformed_request
    ├── Incompatible (ValueError)           code=incompatible
    ├── IntegrityError (ValueError)         code=integrity_error
    ├── UnsafeFormat (PermissionError)      code=unsafe_format
    ├── NotFound (LookupError)              code=not_found
    ├── Conflict                            code=conflict
    ├── QuotaExceeded                       code=quota_exceeded
    ├── Unauthorized (PermissionError)      code=unauthorized
    ├── Forbidden (PermissionError)         code=forbidden
    ├── Overloaded                          code=overloaded
    ├── NotReady                            code=not_ready
    ├── PayloadTooLarge (ValueError)        code=payload_too_large
    ├── DeadlineExceeded (TimeoutError)     code=deadline_exceeded
    ├── WorkerFailed                        code=worker_failed
    ├── MissingExtra (ImportError)          code=missing_extra
    └── StoreUnavailable (ConnectionError)  code=store_unavailable
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "Conflict",
    "ContractViolation",
    "DeadlineExceeded",
    "ErrorDetail",
    "Forbidden",
    "HTTP_STATUS",
    "Incompatible",
    "IntegrityError",
    "InvalidSpec",
    "MalformedRequest",
    "MissingExtra",
    "ModelplaneError",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "QuotaExceeded",
    "ReplicaLost",
    "StoreUnavailable",
    "Unauthorized",
    "UnsafeFormat",
    "WorkerFailed",
]

HTTP_STATUS: dict[str, int] = {
    "invalid_spec": 400,
    "contract_violation": 400,
    "malformed_request": 400,
    "incompatible": 400,
    "integrity_error": 400,
    "unsafe_format": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "request_timeout": 408,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "features_unavailable": 422,
    "overloaded": 429,
    "quota_exceeded": 429,
    "rate_limited": 429,
    "output_contract_violation": 500,
    "missing_extra": 501,
    "worker_failed": 503,
    "replica_lost": 503,
    "not_ready": 503,
    "server_busy": 503,
    "store_unavailable": 503,
    "deadline_exceeded": 504,
}
"""The one table every HTTP edge maps error codes with; any other code is a 500."""

ErrorDetail = Mapping[str, Any]
"""One problem inside an error, usually ``{"field": "inputs[2].dtype", "problem": "..."}``."""


class ModelplaneError(Exception):
    """Root of every error modelplane raises on purpose."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: Sequence[ErrorDetail] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, Any]] = [dict(d) for d in details]

    def to_dict(self) -> dict[str, Any]:
        """The JSON body edges send: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def __str__(self) -> str:
        if not self.details:
            return self.message
        lines = [self.message]
        for detail in self.details:
            field = detail.get("field")
            problem = detail.get("problem", "")
            lines.append(f"  {field}: {problem}" if field else f"  {problem}")
        return "\n".join(lines)


class InvalidSpec(ModelplaneError, ValueError):
    """A spec, manifest or request did not validate; ``details`` name each bad field."""

    code = "invalid_spec"


class ContractViolation(InvalidSpec):
    """A request or a model output broke the endpoint's contract."""

    code = "contract_violation"


class MalformedRequest(InvalidSpec):
    """The request body could not be parsed at all (not JSON, truncated): no contract was
    even consulted."""

    code = "malformed_request"


class Incompatible(ModelplaneError, ValueError):
    """Two versions of a schema, or a signature and a contract, do not fit together."""

    code = "incompatible"


class IntegrityError(ModelplaneError, ValueError):
    """Stored bytes no longer match their digest, or a hash chain is broken."""

    code = "integrity_error"


class UnsafeFormat(ModelplaneError, PermissionError):
    """A format that can run code (pickle) was offered without being marked trusted."""

    code = "unsafe_format"


class NotFound(ModelplaneError, LookupError):
    """The named model, version, alias, endpoint or object does not exist."""

    code = "not_found"


class Conflict(ModelplaneError):
    """The change lost a race or contradicts the current state; reread and retry."""

    code = "conflict"


class QuotaExceeded(ModelplaneError):
    """Admitting this work would exceed a team's quota."""

    code = "quota_exceeded"


class Unauthorized(ModelplaneError, PermissionError):
    """The caller has no token, or a token that is unknown, expired or revoked."""

    code = "unauthorized"


class Forbidden(ModelplaneError, PermissionError):
    """The caller is known, but its scopes or team do not cover this action."""

    code = "forbidden"


class Overloaded(ModelplaneError):
    """A bounded queue is full; retry after ``retry_after_s``."""

    code = "overloaded"

    def __init__(
        self, message: str, *, retry_after_s: float = 1.0, details: Sequence[ErrorDetail] = ()
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class NotReady(ModelplaneError):
    """The endpoint is one the server was told to serve, but it cannot answer yet (its
    workers are starting, or its last start failed and is retried): retry after
    ``retry_after_s``. Unlike ``not_found``, it tells clients and load balancers to retry."""

    code = "not_ready"

    def __init__(
        self, message: str, *, retry_after_s: float = 1.0, details: Sequence[ErrorDetail] = ()
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class PayloadTooLarge(ModelplaneError, ValueError):
    """A request is over a size limit (its body's bytes, or its rows); ``details`` name the
    limit and the field or setting that sets it."""

    code = "payload_too_large"


class DeadlineExceeded(ModelplaneError, TimeoutError):
    """The request's deadline passed before an answer came."""

    code = "deadline_exceeded"


class WorkerFailed(ModelplaneError):
    """A model worker died or misbehaved while holding the request."""

    code = "worker_failed"


class ReplicaLost(WorkerFailed):
    """The replica went away (its process, its connection or its node) before it answered:
    the request never reached a model that could fail it, so another replica may retry it."""

    code = "replica_lost"


class MissingExtra(ModelplaneError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    code = "missing_extra"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; install it with: pip install 'modelplane[{extra}]'"
        )
        self.module = module
        self.extra = extra


class StoreUnavailable(ModelplaneError, ConnectionError):
    """The state store or an online store could not be reached."""

    code = "store_unavailable"

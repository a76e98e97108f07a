"""Why a fallback answered; static fallback values are built by
:class:`modelplane.core.fallback.StaticFallback` (checked at apply, read once at build)."""

from __future__ import annotations

from enum import StrEnum

from modelplane.core.fallback import StaticFallback

__all__ = ["FallbackReason", "StaticFallback"]


class FallbackReason(StrEnum):
    """Why the fallback answered instead of the model (the ``modelplane-fallback`` header)."""

    CIRCUIT_OPEN = "circuit_open"
    """The route's breaker is open."""
    TIMEOUT = "timeout"
    """No answer before the request's deadline."""
    WORKER_FAILED = "worker_failed"
    """The worker died, or the model raised."""
    CONTRACT_VIOLATION = "contract_violation"
    """The model's answer broke the contract's output schema."""
    FEATURES_UNAVAILABLE = "features_unavailable"
    """Joined features were stale or missing under the ``fallback`` policy."""
    DEGRADED = "degraded"
    """The system is overloaded and the endpoint's tier is served by its fallback."""

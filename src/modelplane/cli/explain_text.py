"""``explain`` as text: one labelled line per fact, standard library only (the fast entry
uses it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["explain_lines"]

_NONE = "-"


def explain_lines(found: Mapping[str, Any]) -> list[str]:
    """``request        ID at TIME`` and so on: labels in one column, values beside them."""
    return [f"{label:<14} {value}" for label, value in _lines(found)]


def _lines(found: Mapping[str, Any]) -> list[tuple[str, str]]:
    registry = found["registry"]
    spec = found["endpoint_spec"]
    fallback = found["fallback"]
    error = found["error"]
    latency = found["latency_ms"]
    verified = (
        "not in the registry"
        if registry is None
        else ("matches the registry" if registry["digest"] == found["digest"] else "DIFFERS")
    )
    return [
        ("request", f"{found['request_id']} at {found['at']}"),
        ("endpoint", found["endpoint"] + (_spec_note(spec))),
        (
            "status",
            str(found["status"]) + (f" {error['code']}: {error['message']}" if error else ""),
        ),
        ("model version", str(found["model_version"] or _NONE)),
        ("digest", f"{found['digest'] or _NONE} ({verified})"),
        ("contract", f"{found['contract']['name']} v{found['contract']['version']}"),
        ("route", f"{found['route']['kind']} ({found['route']['ref'] or _NONE})"),
        ("fallback", f"{fallback['reason']}: {fallback['why']}" if fallback["used"] else "no"),
        ("latency ms", " ".join(f"{k} {latency[k]:.3f}" for k in latency)),
        ("batch size", str(found["batch_size"] or _NONE)),
        *(
            [("kept", "a brief record (not sampled): no features")]
            if found.get("record") == "brief"
            else []
        ),
    ]


def _spec_note(spec: Mapping[str, Any] | None) -> str:
    if spec is None:
        return " (deleted since)"
    changed = ", changed since" if spec["changed_since"] else ""
    return f" (spec generation {spec['generation']}{changed})"

"""``explain``: one kept request, joined with what the store knows about what served it.

Two reads: the request's rows in the prediction log, then, in one session, the endpoint's
resource row and the registry's row of the version that answered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from modelplane.errors import NotFound
from modelplane.observe.predlog import find_predictions
from modelplane.store.db import read_session
from modelplane.store.schema import ModelVersionRow, ResourceRow

__all__ = ["NOT_KEPT", "explain"]

NOT_KEPT = "only sampled requests, errors and fallbacks are kept"


def explain(engine: Engine, request_id: str) -> dict[str, Any]:
    """What served ``request_id`` and how; :class:`NotFound` when it was not kept."""
    rows = find_predictions(engine, request_id)
    if not rows:
        raise NotFound(
            f"request '{request_id}' is not in the prediction log: {NOT_KEPT}",
            details=[{"field": "request_id", "problem": "not sampled, or trimmed since"}],
        )
    row = rows[0]
    with read_session(engine) as session:
        resource = session.get(ResourceRow, ("Endpoint", row["endpoint"]))
        registered = _registered(session, row["model_version"])
        spec = None if resource is None else _spec_of(resource, row["at"])
    return {
        "request_id": request_id,
        "at": row["at"].isoformat(),
        "kept_rows": len(rows),
        "endpoint": row["endpoint"],
        "status": row["status"],
        "error": None
        if row["error_code"] is None
        else {"code": row["error_code"], "message": row["detail"]},
        "model_version": row["model_version"],
        "digest": row["digest"],
        "registry": registered,
        "contract": {"name": row["contract"], "version": row["contract_version"]},
        "endpoint_spec": spec,
        "route": {"ref": row["route"], "kind": row["route_kind"]},
        "fallback": _fallback(row),
        "latency_ms": {k: row[f"{k}_ms"] for k in ("queue", "batch", "compute", "total")},
        "batch_size": row["batch_size"],
        "features": row.get("features"),
    }


def _registered(session: Any, label: str | None) -> dict[str, Any] | None:
    """The registry's row of ``name:version``, if it is a registered version."""
    name, _, version = (label or "").rpartition(":")
    if not name or not version.isdigit():
        return None  # a package served from a folder: not in the registry
    query = select(ModelVersionRow.digest, ModelVersionRow.runtime, ModelVersionRow.created_at)
    query = query.where(ModelVersionRow.model_name == name, ModelVersionRow.version == int(version))
    found = session.execute(query).first()
    if found is None:
        return None
    return {"digest": found.digest, "runtime": found.runtime, "registered_at": found.created_at}


def _spec_of(resource: ResourceRow, at: datetime) -> dict[str, Any]:
    contract = resource.spec.get("contract", {})
    return {
        "generation": resource.generation,
        "updated_at": resource.updated_at.isoformat(),
        "changed_since": resource.updated_at > at,
        "contract_version_now": contract.get("version", 1),
    }


def _fallback(row: dict[str, Any]) -> dict[str, Any]:
    reason = row["fallback_reason"]
    if reason is None:
        return {"used": False, "reason": None, "why": None}
    return {"used": True, "reason": reason, "why": row["detail"]}

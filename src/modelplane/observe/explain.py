"""``explain``: one kept request, joined with what the store knows about what served it.

Two reads: the request's rows in the prediction log (or, for a success that was not
sampled, its brief record in the request log: no features, kept an hour by default), then,
in one session, the endpoint's
resource row and the registry's row of the version that answered. The joined document is
built by :func:`explain_document` from plain rows, so the embedded store can be read with
the standard library's ``sqlite3`` (:func:`explain_sqlite`, what the fast entry uses: the
command is mostly process start-up, and SQLAlchemy's import alone would double it) and any
store through SQLAlchemy (:func:`explain`), with the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelplane.errors import NotFound

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["NOT_KEPT", "brief_row", "explain", "explain_document", "explain_sqlite", "not_kept"]

NOT_KEPT = (
    "every request is kept briefly (the request log, an hour by default), a sample of"
    " successful ones in full (modelplane up --sample-rate, default 0.01; 1.0 keeps every"
    " one) with every error and fallback, up to the newest --log-retain rows"
)

_LIMIT = 10
_PREDICTIONS = "SELECT * FROM prediction_log WHERE request_id = ? ORDER BY id DESC LIMIT ?"
_REQUESTS = "SELECT * FROM request_log WHERE request_id = ? ORDER BY id DESC LIMIT ?"
_ENDPOINT = (
    "SELECT generation, spec, updated_at FROM resources WHERE kind = 'Endpoint' AND name = ?"
)
_VERSION = (
    "SELECT digest, runtime, created_at FROM model_versions WHERE model_name = ? AND version = ?"
)


def not_kept(request_id: str) -> NotFound:
    """The error for a request the prediction log does not hold, saying how to keep more."""
    return NotFound(
        f"request '{request_id}' is in neither the prediction log nor the request log: {NOT_KEPT}",
        details=[{"field": "request_id", "problem": "not sampled, or trimmed since"}],
    )


def explain(engine: Engine, request_id: str) -> dict[str, Any]:
    """What served ``request_id`` and how; :class:`NotFound` when it was not kept."""
    from sqlalchemy import select

    from modelplane.observe.predlog import find_predictions, find_requests
    from modelplane.store.db import read_session
    from modelplane.store.schema import ModelVersionRow, ResourceRow

    rows = find_predictions(engine, request_id, _LIMIT) or find_requests(engine, request_id, _LIMIT)
    if not rows:
        raise not_kept(request_id)
    row = rows[0]
    registered: tuple[str, str, datetime] | None = None
    with read_session(engine) as session:
        resource = session.get(ResourceRow, ("Endpoint", row["endpoint"]))
        endpoint = (
            None
            if resource is None
            else (resource.generation, dict(resource.spec), resource.updated_at)
        )
        found = _version_key(row["model_version"])
        if found is not None:
            query = select(
                ModelVersionRow.digest, ModelVersionRow.runtime, ModelVersionRow.created_at
            ).where(ModelVersionRow.model_name == found[0], ModelVersionRow.version == found[1])
            version = session.execute(query).first()
            registered = None if version is None else (version[0], version[1], version[2])
    return explain_document(request_id, rows, endpoint, registered)


def explain_sqlite(path: str, request_id: str) -> dict[str, Any]:
    """:func:`explain` over an embedded store's file, with ``sqlite3`` alone (read-only)."""
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0) as conn:
        conn.row_factory = sqlite3.Row
        rows = [_prediction(dict(r)) for r in conn.execute(_PREDICTIONS, (request_id, _LIMIT))]
        if not rows:
            found_brief = conn.execute(_REQUESTS, (request_id, _LIMIT))
            rows = [brief_row(dict(r)) for r in found_brief]
        if not rows:
            raise not_kept(request_id)
        row = rows[0]
        endpoint = conn.execute(_ENDPOINT, (row["endpoint"],)).fetchone()
        found = _version_key(row["model_version"])
        registered = None if found is None else conn.execute(_VERSION, found).fetchone()
    return explain_document(
        request_id,
        rows,
        None if endpoint is None else (endpoint[0], json.loads(endpoint[1]), _utc(endpoint[2])),
        None if registered is None else (registered[0], registered[1], _utc(registered[2])),
    )


def _prediction(row: dict[str, Any]) -> dict[str, Any]:
    """A ``prediction_log`` row as SQLAlchemy hands it back: times aware, JSON parsed."""
    row["at"] = _utc(row["at"])
    if isinstance(row.get("features"), str):
        row["features"] = json.loads(row["features"])
    return row


def brief_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A request log row in the prediction log's shape (``at`` a UTC datetime; no error,
    fallback, detail or features), marked ``brief``."""
    at = datetime.fromtimestamp(float(row["at"]), UTC)
    missing = ("fallback_reason", "error_code", "detail", "features")
    return {**row, "at": at, **dict.fromkeys(missing), "brief": True}


def _utc(value: str) -> datetime:
    # SQLite keeps naive UTC text (see store.schema.UTCDateTime)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _version_key(label: str | None) -> tuple[str, int] | None:
    """``name:version`` as a registry key; None for a package served from a folder."""
    name, _, version = (label or "").rpartition(":")
    if not name or not version.isdigit():
        return None
    return name, int(version)


def explain_document(
    request_id: str,
    rows: Sequence[Mapping[str, Any]],
    endpoint: tuple[int, Mapping[str, Any], datetime] | None,
    registered: tuple[str, str, datetime] | None,
) -> dict[str, Any]:
    """The answer, from the request's kept rows (newest first), the endpoint's resource
    (generation, spec, updated) and the registry's row of the version (digest, runtime,
    registered), each ``None`` when gone or never there."""
    row = rows[0]
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
        "registry": None
        if registered is None
        else {"digest": registered[0], "runtime": registered[1], "registered_at": registered[2]},
        "contract": {"name": row["contract"], "version": row["contract_version"]},
        "endpoint_spec": None if endpoint is None else _spec_of(endpoint, row["at"]),
        "route": {"ref": row["route"], "kind": row["route_kind"]},
        "fallback": _fallback(row),
        "latency_ms": {k: row[f"{k}_ms"] for k in ("queue", "batch", "compute", "total")},
        "batch_size": row["batch_size"],
        "features": row.get("features"),
        "record": "brief" if row.get("brief") else "full",
    }


def _spec_of(endpoint: tuple[int, Mapping[str, Any], datetime], at: datetime) -> dict[str, Any]:
    generation, spec, updated_at = endpoint
    contract = spec.get("contract", {})
    return {
        "generation": generation,
        "updated_at": updated_at.isoformat(),
        "changed_since": updated_at > at,
        "contract_version_now": contract.get("version", 1),
    }


def _fallback(row: Mapping[str, Any]) -> dict[str, Any]:
    reason = row["fallback_reason"]
    if reason is None:
        return {"used": False, "reason": None, "why": None}
    return {"used": True, "reason": reason, "why": row["detail"]}

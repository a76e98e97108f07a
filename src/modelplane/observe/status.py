"""``status``: what exactly is running, from two queries and no per-endpoint work.

It reads the endpoints' desired spec and the status the endpoint controller wrote (routes
resolved to versions, replicas, the ``Ready`` condition), and every registered version's
digest. An embedded SQLite store is read with the standard library's ``sqlite3``: a
status command is mostly process start-up, and SQLAlchemy's import alone would double it.
Other stores go through SQLAlchemy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["endpoint_status", "read_status", "short_digest"]

_ENDPOINTS = (
    "SELECT name, generation, spec, status FROM resources WHERE kind = 'Endpoint' ORDER BY name"
)
_DIGESTS = "SELECT model_name, version, digest FROM model_versions"
_SQLITE = "sqlite:///"

Row = tuple[Any, ...]


def read_status(database_url: str) -> list[dict[str, Any]]:
    """Every endpoint's status (see :func:`endpoint_status`), by name."""
    endpoints, versions = _fetch(database_url)
    digests = {f"{name}:{version}": digest for name, version, digest in versions}
    return [endpoint_status(name, gen, _json(spec), _json(status), digests)
            for name, gen, spec, status in endpoints]  # fmt: skip


def _fetch(url: str) -> tuple[list[Row], list[Row]]:
    if url.startswith(_SQLITE) and "?" not in url:
        import sqlite3

        path = url[len(_SQLITE) :]
        if not os.path.exists(path):
            return [], []  # nothing was ever applied here
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0) as conn:
                return conn.execute(_ENDPOINTS).fetchall(), conn.execute(_DIGESTS).fetchall()
        except sqlite3.OperationalError:
            pass  # no tables yet, or locked: the engine below migrates and waits
    return _fetch_engine(url)


def _fetch_engine(url: str) -> tuple[list[Row], list[Row]]:
    from sqlalchemy import text

    from modelplane.store.db import open_engine, read_session

    engine = open_engine(url)
    try:
        with read_session(engine) as session:
            endpoints = [tuple(r) for r in session.execute(text(_ENDPOINTS))]
            versions = [tuple(r) for r in session.execute(text(_DIGESTS))]
    finally:
        engine.dispose()
    return endpoints, versions


def _json(value: Any) -> Any:
    # SQLite hands JSON columns back as text; PostgreSQL's driver already parsed them.
    return json.loads(value) if isinstance(value, str | bytes) else value


def short_digest(digest: str | None) -> str | None:
    """``sha256:`` and the first 12 hex digits: enough to tell versions apart by eye."""
    return None if digest is None else digest[: len("sha256:") + 12]


def endpoint_status(
    name: str,
    generation: int,
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    digests: Mapping[str, str],
) -> dict[str, Any]:
    """One endpoint: team, tier, contract, routes (weights, versions, digests), replicas,
    health; rollout and SLO budget are ``None`` until those controllers exist."""
    status = status or {}
    contract = spec.get("contract", {})
    serving: Mapping[str, str] = status.get("serving", {})
    return {
        "name": name,
        "team": spec.get("team"),
        "tier": spec.get("tier", "standard"),
        "contract": {"name": contract.get("name"), "version": contract.get("version", 1)},
        "generation": generation,
        "observed_generation": status.get("observed_generation"),
        "routes": _routes(spec.get("routes", []), serving, digests),
        "replicas": status.get("replicas"),
        "health": _health(status.get("conditions", [])),
        "rollout": None,
        "slo_budget": None,
    }


def _routes(
    routes: Iterable[Mapping[str, Any]], serving: Mapping[str, str], digests: Mapping[str, str]
) -> list[dict[str, Any]]:
    listed = list(routes)
    total = sum(float(r.get("weight", 100.0)) for r in listed) or 1.0
    out = []
    for route in listed:
        label = serving.get(route["model"])
        digest = digests.get(label) if label else None
        out.append(
            {
                "model": route["model"],
                "weight_percent": round(100.0 * float(route.get("weight", 100.0)) / total, 2),
                "version": label,
                "digest": digest,
                "short_digest": short_digest(digest),
            }
        )
    return out


def _health(conditions: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None:
        return {"ready": None, "reason": "NotObserved", "message": "no controller has seen it"}
    return {
        "ready": ready.get("status") == "True",
        "reason": ready.get("reason", ""),
        "message": ready.get("message", ""),
    }

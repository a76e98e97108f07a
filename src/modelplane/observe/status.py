"""``status``: what exactly is running, from two queries and no per-endpoint work.

It reads the endpoints' desired spec and the status the endpoint controller wrote (routes
resolved to versions, replicas, the ``Ready`` condition), each endpoint's ``Rollout`` (the
rollout controller's state) and ``SLOReport`` (the SLO recorder's budgets and burn rates)
in the same query, and every registered version's digest. An embedded SQLite store is
read with the standard library's ``sqlite3``: a status command is mostly process start-up,
and SQLAlchemy's import alone would double it. Other stores go through SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "FINISHED_PHASES",
    "endpoint_status",
    "read_status",
    "rollout_status",
    "short_digest",
    "slo_budget",
]

_RESOURCES = (
    "SELECT kind, name, generation, spec, status FROM resources"
    " WHERE kind IN ('Endpoint', 'Rollout', 'SLOReport', 'Gateway', 'OutcomeReport') ORDER BY name"
)
_DIGESTS = "SELECT model_name, version, digest FROM model_versions"
_SQLITE = "sqlite:///"

Row = tuple[Any, ...]


FINISHED_PHASES = frozenset({"promoted", "rolled_back", "failed"})
"""``core.rollout.TERMINAL`` as text: importing it (pydantic) would double a status' time."""


def read_status(database_url: str) -> dict[str, Any]:
    """``status``'s document: every endpoint's status (see :func:`endpoint_status`), by
    name, and ``sandbox_missing``: what the serving gateway's model workers cannot give up
    on their machine, and why (empty: the whole sandbox holds, or no gateway reports)."""
    resources, versions = _fetch(database_url)
    digests = {f"{name}:{version}": digest for name, version, digest in versions}
    endpoints: list[Row] = []
    others: dict[tuple[str, str], Row] = {}
    for row in resources:
        if row[0] == "Endpoint":
            endpoints.append(row)
        else:
            others[row[0], row[1]] = row
    gateway = others.get(("Gateway", "local"))
    reporting = _gateway_reporting(gateway)
    found = [
        endpoint_status(
            name,
            gen,
            _json(spec),
            _json(status),
            digests,
            rollout=_rollout(others.get(("Rollout", name))),
            slo=_slo(others.get(("SLOReport", name))),
            gateway_reporting=reporting,
            outcomes=_outcomes(others.get(("OutcomeReport", name))),
        )
        for _, name, gen, spec, status in endpoints
    ]
    return {"endpoints": found, "sandbox_missing": _sandbox_missing(gateway) if reporting else {}}


def _gateway_reporting(row: Row | None) -> bool:
    """Whether a gateway reported lately (three heartbeats); ``False`` when none ever did."""
    status = _json(row[4]) if row is not None else None
    if not status or "heartbeat_at" not in status:
        return False
    return bool(time.time() - float(status["heartbeat_at"]) <= 3 * float(status["every_s"]))


def _sandbox_missing(row: Row | None) -> dict[str, str]:
    """What the reporting gateway's model workers cannot give up (``security.sandbox``)."""
    status = _json(row[4]) if row is not None else None
    return dict((status or {}).get("sandbox_missing") or {})


def _rollout(row: Row | None) -> dict[str, Any] | None:
    return None if row is None else rollout_status(_json(row[3]), _json(row[4]))


def _outcomes(row: Row | None) -> dict[str, Any] | None:
    """The outcome recorder's summary (``controlplane.outcomes``): labels per version and
    the regressions and alerts it found; ``None`` before any outcome arrived."""
    return None if row is None else _json(row[4])


def _slo(row: Row | None) -> dict[str, Any] | None:
    return None if row is None else slo_budget(_json(row[4]))


def _fetch(url: str) -> tuple[list[Row], list[Row]]:
    if url.startswith(_SQLITE) and "?" not in url:
        import sqlite3

        path = url[len(_SQLITE) :]
        if not os.path.exists(path):
            return [], []  # nothing was ever applied here
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0) as conn:
                return conn.execute(_RESOURCES).fetchall(), conn.execute(_DIGESTS).fetchall()
        except sqlite3.OperationalError:
            pass  # no tables yet, or locked: the engine below migrates and waits
    return _fetch_engine(url)


def _fetch_engine(url: str) -> tuple[list[Row], list[Row]]:
    from sqlalchemy import text

    from modelplane.store.db import open_engine, read_session

    engine = open_engine(url)
    try:
        with read_session(engine) as session:
            endpoints = [tuple(r) for r in session.execute(text(_RESOURCES))]
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
    *,
    rollout: dict[str, Any] | None = None,
    slo: dict[str, Any] | None = None,
    gateway_reporting: bool = True,
    outcomes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One endpoint: team, tier, contract, routes (weights, versions, digests) as the
    gateway serves them, replicas, health, its latest rollout (:func:`rollout_status`) and
    SLO budget (:func:`slo_budget`).

    Routes and shadows are what the gateway serves (written by the endpoint controller),
    not what was applied: while a change has not taken effect, ``pending`` says so. When no
    gateway has reported lately, ``stale`` is true: the replica counts and health are the
    last ones seen, not the present.
    """
    status = status or {}
    contract = spec.get("contract", {})
    serving: Mapping[str, str] = status.get("serving", {})
    served_routes = status.get("routes")
    routes = spec.get("routes", []) if served_routes is None else served_routes
    shadows = status.get("shadows", spec.get("shadows", []))
    stale = not gateway_reporting
    health = _health(status.get("conditions", []))
    if stale and health["ready"] is not None:
        health = {
            "ready": None,
            "reason": "NotReporting",
            "message": "no gateway has reported lately; last seen: "
            + ("Ready" if health["ready"] else f"NotReady ({health['reason']})"),
        }
    return {
        "name": name,
        "team": spec.get("team"),
        "tier": spec.get("tier", "standard"),
        "contract": {"name": contract.get("name"), "version": contract.get("version", 1)},
        "generation": generation,
        "observed_generation": status.get("observed_generation"),
        "routes": _routes(routes, serving, digests),
        "shadows": _shadows(shadows, serving, digests),
        "pending": _pending(status.get("conditions", [])),
        "replicas": status.get("replicas"),
        "stale": stale,
        "health": health,
        "rollout": rollout,
        "slo_budget": slo,
        "outcomes": outcomes,
    }


def _pending(conditions: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The latest generation when it is not served yet: why (starting, or a failure)."""
    synced = next((c for c in conditions if c.get("type") == "Synced"), None)
    if synced is None or synced.get("status") == "True":
        return None
    return {"reason": synced.get("reason", ""), "message": synced.get("message", "")}


def _routes(
    routes: Iterable[Mapping[str, Any]], serving: Mapping[str, str], digests: Mapping[str, str]
) -> list[dict[str, Any]]:
    listed = list(routes)
    total = sum(float(r.get("weight", 100.0)) for r in listed) or 1.0
    return [
        {
            "model": route["model"],
            "weight_percent": round(100.0 * float(route.get("weight", 100.0)) / total, 2),
            **_served(route["model"], serving, digests),
        }
        for route in listed
    ]


def _shadows(
    shadows: Iterable[Mapping[str, Any]], serving: Mapping[str, str], digests: Mapping[str, str]
) -> list[dict[str, Any]]:
    return [
        {
            "model": shadow["model"],
            "percent": float(shadow.get("percent", 100.0)),
            **_served(shadow["model"], serving, digests),
        }
        for shadow in shadows
    ]


def _served(model: str, serving: Mapping[str, str], digests: Mapping[str, str]) -> dict[str, Any]:
    """The version ``model`` resolved to, as the endpoint controller last served it."""
    label = serving.get(model)
    digest = digests.get(label) if label else None
    return {"version": label, "digest": digest, "short_digest": short_digest(digest)}


def _health(conditions: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None:
        return {"ready": None, "reason": "NotObserved", "message": "no controller has seen it"}
    return {
        "ready": ready.get("status") == "True",
        "reason": ready.get("reason", ""),
        "message": ready.get("message", ""),
    }


def rollout_status(spec: Mapping[str, Any], status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``Rollout`` resource as people read it: from and to which version, by which
    strategy, where it stands (phase, step ``i`` of ``n``, weights), its gates' outcomes when
    a step was last judged (``gates``) and their readings on the running step's window so far
    (``readings``). ``in_progress`` is false once it promoted, rolled back or failed."""
    rollout: Mapping[str, Any] = spec.get("rollout", {})
    state: Mapping[str, Any] = (status or {}).get("state") or {}
    phase = str(state.get("phase", "pending"))
    steps = len(rollout.get("steps", ()))
    _, canary_weight = state.get("weights", (100.0, 0.0))
    history = state.get("history") or ()
    return {
        "from": spec.get("stable"),
        "to": rollout.get("to"),
        "strategy": rollout.get("strategy", "canary"),
        "phase": phase,
        "in_progress": phase not in FINISHED_PHASES,
        "step": min(int(state.get("step", 0)) + 1, steps),
        "steps": steps,
        "canary_weight": float(canary_weight),
        "shadow_percent": float(state.get("shadow_percent", 0.0)),
        "paused_from": state.get("paused_from"),
        "gates": _gates(state.get("gates", ())),
        "readings": _readings((status or {}).get("readings")),
        "last_event": history[-1].get("message") if history else None,
        "requested_at": spec.get("requested_at"),
    }


def _gates(gates: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": gate.get("name"),
            "outcome": gate.get("outcome"),
            "reading": gate.get("reading", {}),
            "reason": gate.get("reason", ""),
        }
        for gate in gates
    ]


def _readings(readings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The gates' readings on the running step's window so far (the controller keeps them
    each pass while the step holds); ``None`` between steps and once it ended."""
    if not readings:
        return None
    return {
        "step": readings.get("step"),
        "since": readings.get("since"),
        "at": readings.get("at"),
        "gates": _gates(readings.get("gates", ())),
    }


def slo_budget(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The SLO recorder's report (budget left over the SLO window, burn rates by window,
    alerts firing, per objective); ``None`` before the endpoint has served any traffic."""
    if not report:
        return None
    objectives = (report.get("availability") or {}, report.get("latency") or {})
    if not any(objective.get("total") for objective in objectives):
        return None
    return dict(report)

"""``status`` as text: aligned columns, standard library only (the fast entry uses it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["NO_ENDPOINTS", "status_lines"]

NO_ENDPOINTS = "no endpoints (modelplane apply -f endpoint.yaml)"
_NONE = "-"

# Each header says what its cells hold, so a person reading it at 3 a.m. needs no manual.
_COLUMNS = ("ENDPOINT", "TEAM", "TIER", "CONTRACT", "ROUTES (WEIGHT MODEL -> VERSION)",
            "REPLICAS (READY/TOTAL)", "HEALTH", "ROLLOUT", "ERROR BUDGET LEFT")  # fmt: skip


def status_lines(
    endpoints: Sequence[Mapping[str, Any]], sandbox_missing: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Aligned columns, one line per endpoint and an indented one under an endpoint whose
    rollout is in progress: a hundred endpoints fit a screen a person can scan."""
    rows = [_row(e) for e in endpoints]
    widths = [max(len(cell) for cell in column) for column in zip(_COLUMNS, *rows, strict=True)]
    yield _aligned(_COLUMNS, widths)
    for endpoint, row in zip(endpoints, rows, strict=True):
        yield _aligned(row, widths)
        rollout = endpoint["rollout"]
        if rollout is not None and rollout["in_progress"]:
            yield "  " + _rollout_line(rollout)
        outcomes = endpoint.get("outcomes") or {}
        for alert in outcomes.get("alerts", []):
            yield f"  OUTCOME ALERT {alert}"
        for note in outcomes.get("notes", []):
            yield f"  OUTCOME NOTE {note}"
    if sandbox_missing:
        why = "; ".join(f"{feature} ({reason})" for feature, reason in sandbox_missing.items())
        yield f"SANDBOX model workers here run without: {why}. See docs/security.md#the-sandbox"


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _row(endpoint: Mapping[str, Any]) -> list[str]:
    contract = endpoint["contract"]
    replicas = endpoint["replicas"]
    return [
        endpoint["name"],
        endpoint["team"] or _NONE,
        endpoint["tier"],
        f"{contract['name']} v{contract['version']}",
        ", ".join([*map(_route, endpoint["routes"]), *map(_shadow, endpoint["shadows"])]),
        _replicas_cell(replicas, stale=bool(endpoint.get("stale"))),
        _health(endpoint),
        _rollout_cell(endpoint["rollout"]),
        _budget_cell(endpoint["slo_budget"]),
    ]


def _route(route: Mapping[str, Any]) -> str:
    served = route["version"] or "unresolved"
    digest = f" {route['short_digest']}" if route["short_digest"] else ""
    return f"{route['weight_percent']:g}% {route['model']} -> {served}{digest}"


def _shadow(shadow: Mapping[str, Any]) -> str:
    served = shadow["version"] or "unresolved"
    return f"shadow {shadow['percent']:g}% {shadow['model']} -> {served}"


def _replicas_cell(replicas: Mapping[str, Any] | None, *, stale: bool) -> str:
    if not replicas:
        return _NONE
    cell = f"{replicas['ready']}/{replicas['total']}"
    return f"{cell} (stale)" if stale else cell


def _health(endpoint: Mapping[str, Any]) -> str:
    """``Ready``, ``NotReady (reason)``, and while the latest generation is not served,
    what is (``gen 1/2``) and why not (``StartFailed``)."""
    health = endpoint["health"]
    if health["reason"] == "NotReporting":
        return "unknown: no gateway reporting (is modelplane up running?)"
    if health["ready"] is None:
        return "unknown"
    word = "Ready" if health["ready"] else f"NotReady ({health['reason']})"
    observed = endpoint["observed_generation"]
    pending = endpoint.get("pending")
    if observed != endpoint["generation"] or pending:
        word += f", gen {observed or '-'}/{endpoint['generation']}"
        if pending and pending["reason"] not in ("Starting", health["reason"]):
            word += f" {pending['reason']}"
    return word


def _rollout_cell(rollout: Mapping[str, Any] | None) -> str:
    if rollout is None:
        return _NONE
    if not rollout["in_progress"]:
        return f"{rollout['phase']} {rollout['to']}"
    if rollout["phase"] == "shadow":
        return f"shadow {rollout['shadow_percent']:g}% -> {rollout['to']}"
    return f"{rollout['phase']} {rollout['canary_weight']:g}% -> {rollout['to']}"


def _rollout_line(rollout: Mapping[str, Any]) -> str:
    """``rollout fraud:1 -> fraud:2 (canary) step 2/4, canary 25%; gates: ...``."""
    where = f"step {rollout['step']}/{rollout['steps']}, canary {rollout['canary_weight']:g}%"
    if rollout["shadow_percent"]:
        where += f", shadow {rollout['shadow_percent']:g}%"
    if rollout["paused_from"]:
        where += f", paused in {rollout['paused_from']}"
    head = f"rollout {rollout['from']} -> {rollout['to']} ({rollout['strategy']})"
    return f"{head} {where}; {_gates(rollout)}"


def _gates(rollout: Mapping[str, Any]) -> str:
    """The readings on the running step's window so far, else the last judgement."""
    readings = rollout.get("readings")
    if readings and readings["gates"]:
        held = float(readings["at"]) - float(readings["since"])
        head = f"gates on {held:.0f}s of step {readings['step']}"
        return f"{head}: " + "; ".join(_gate(g) for g in readings["gates"])
    return "gates: " + ("; ".join(_gate(g) for g in rollout["gates"]) or "not judged yet")


def _gate(gate: Mapping[str, Any]) -> str:
    reading = ", ".join(f"{k} {_number(v)}" for k, v in gate["reading"].items())
    return f"{gate['name']} {gate['outcome']}" + (f" ({reading})" if reading else "")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def _budget_cell(budget: Mapping[str, Any] | None) -> str:
    """Error budget left per objective over the SLO window, and the burn alerts firing:
    ``avail 93.1% left, latency 99.0% left``; while no alert has enough data to judge,
    it says so rather than let a young budget's big numbers pass for a verdict."""
    if budget is None:
        return _NONE
    availability, latency = budget["availability"], budget["latency"]
    cell = f"avail {availability['remaining']:.1%} left, latency {latency['remaining']:.1%} left"
    objectives = (("avail", availability), ("latency", latency))
    firing = [f"{name} {alert}" for name, objective in objectives for alert in objective["firing"]]
    if firing:
        return f"{cell} FIRING {', '.join(firing)}"
    waiting = all(
        objective.get("alerts") and objective.get("not_judged") == objective["alerts"]
        for _, objective in objectives
    )
    return f"{cell} (too little data for alerts)" if waiting else cell

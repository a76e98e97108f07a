"""``modelplane status`` (what exactly is running) and ``modelplane explain REQUEST_ID``.

``status`` must answer in about the time the interpreter takes to start, so it imports
only what it reads with (see :mod:`modelplane.observe.status`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.output import console, emit_json, handle_errors

__all__ = ["explain", "register", "status"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_NONE = "-"


@handle_errors
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """What exactly is running: endpoints, contracts, routes, versions, replicas, health,
    rollouts and SLO error budgets."""
    from modelplane.observe.status import read_status

    cli: CliContext = ctx.obj
    endpoints = read_status(cli.settings.resolved_database_url())
    if as_json:
        emit_json({"endpoints": endpoints})
        return
    if not endpoints:
        console.print("no endpoints (modelplane apply -f endpoint.yaml)")
        return
    for line in _status_lines(endpoints):
        console.print(line, markup=False, emoji=False)


_COLUMNS = ("ENDPOINT", "TEAM", "TIER", "CONTRACT", "ROUTES", "REPLICAS", "HEALTH", "ROLLOUT",
            "SLO BUDGET")  # fmt: skip


def _status_lines(endpoints: Sequence[Mapping[str, Any]]) -> Iterator[str]:
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
        _NONE if not replicas else f"{replicas['ready']}/{replicas['total']}",
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


def _health(endpoint: Mapping[str, Any]) -> str:
    health = endpoint["health"]
    if health["ready"] is None:
        return "unknown"
    word = "Ready" if health["ready"] else f"NotReady ({health['reason']})"
    observed = endpoint["observed_generation"]
    stale = observed is not None and observed != endpoint["generation"]
    return f"{word}, gen {observed}/{endpoint['generation']}" if stale else word


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
    gates = "; ".join(_gate(g) for g in rollout["gates"]) or "not judged yet"
    head = f"rollout {rollout['from']} -> {rollout['to']} ({rollout['strategy']})"
    return f"{head} {where}; gates: {gates}"


def _gate(gate: Mapping[str, Any]) -> str:
    reading = ", ".join(f"{k} {_number(v)}" for k, v in gate["reading"].items())
    return f"{gate['name']} {gate['outcome']}" + (f" ({reading})" if reading else "")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def _budget_cell(budget: Mapping[str, Any] | None) -> str:
    """Budget left per objective, and the alerts firing: ``avail 93.1%, latency 99.0%``."""
    if budget is None:
        return _NONE
    availability, latency = budget["availability"], budget["latency"]
    cell = f"avail {availability['remaining']:.1%}, latency {latency['remaining']:.1%}"
    firing = [f"{name} {alert}" for name, objective in (("avail", availability),
              ("latency", latency)) for alert in objective["firing"]]  # fmt: skip
    return cell + (f" FIRING {', '.join(firing)}" if firing else "")


@handle_errors
def explain(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The modelplane-request-id of a response.")],
    as_json: JsonFlag = False,
) -> None:
    """Explain one request: version, digest, contract, route, fallback, latency split."""
    from modelplane.cli.context import registry_from
    from modelplane.observe.explain import explain as explain_request

    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        found = explain_request(registry.engine, request_id)
    if as_json:
        emit_json(found)
        return
    for label, value in _lines(found):
        console.print(f"{label:<14} {value}", markup=False)


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
    ]


def _spec_note(spec: Mapping[str, Any] | None) -> str:
    if spec is None:
        return " (deleted since)"
    changed = ", changed since" if spec["changed_since"] else ""
    return f" (spec generation {spec['generation']}{changed})"


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``explain`` to the root app."""
    app.command("status")(status)
    app.command("explain")(explain)

"""``modelplane status`` (what exactly is running) and ``modelplane explain REQUEST_ID``.

``status`` must answer in about the time the interpreter takes to start, so it imports
only what it reads with (see :mod:`modelplane.observe.status`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.output import console, emit_json, handle_errors
from modelplane.cli.status_text import NO_ENDPOINTS, status_lines

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
        console.print(NO_ENDPOINTS)
        return
    for line in status_lines(endpoints):
        console.print(line, markup=False, emoji=False, soft_wrap=True)


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

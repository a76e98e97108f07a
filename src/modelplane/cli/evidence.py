"""``modelplane status`` (what exactly is running) and ``modelplane explain REQUEST_ID``.

``status`` must answer in about the time the interpreter takes to start, so it imports
only what it reads with (see :mod:`modelplane.observe.status`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.explain_text import explain_lines
from modelplane.cli.output import console, emit_json, handle_errors
from modelplane.cli.status_text import NO_ENDPOINTS, status_lines

__all__ = ["explain", "register", "status"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@handle_errors
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """What exactly is running: endpoints, contracts, routes, versions, replicas, health,
    rollouts and SLO error budgets."""
    from modelplane.observe.status import read_status

    cli: CliContext = ctx.obj
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            document = remote.status()
    else:
        document = read_status(cli.settings.resolved_database_url())
    if as_json:
        emit_json(document)
        return
    endpoints = document["endpoints"]
    if not endpoints:
        console.print(NO_ENDPOINTS)
        return
    for line in status_lines(endpoints, document.get("sandbox_missing")):
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
    for line in explain_lines(found):
        console.print(line, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``explain`` to the root app."""
    app.command("status")(status)
    app.command("explain")(explain)

"""``modelplane audit``: read and verify the hash-chained audit log."""

from __future__ import annotations

from typing import Annotated

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table

__all__ = ["app"]

app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("log")
@handle_errors
def log(
    ctx: typer.Context,
    subject: Annotated[str | None, typer.Option(help="Only events about this subject.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List recorded changes, newest first."""
    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        events = registry.audit_events(subject=subject, action=action, actor=actor, limit=limit)
    if as_json:
        emit_json(events)
        return
    table(
        "audit log",
        ["seq", "at", "actor", "action", "subject", "reason"],
        [
            (e.seq, e.at.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.action, e.subject, e.reason)
            for e in events
        ],
    )


@app.command("verify")
@handle_errors
def verify(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Recompute the hash chain; name the first edited, deleted or reordered event."""
    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        registry.verify_audit()
        newest = registry.audit_events(limit=1)
    last_seq = newest[0].seq if newest else 0
    if as_json:
        emit_json({"ok": True, "events": last_seq})
    else:
        intact = f"[green]audit log intact[/]: {last_seq} events"
        console.print(intact if newest else "audit log is empty")

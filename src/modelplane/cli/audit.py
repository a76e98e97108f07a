"""``modelplane audit``: read and verify the hash-chained audit log, anchor its head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table
from modelplane.errors import NotFound

if TYPE_CHECKING:
    from modelplane.store.audit_anchors import Anchor

__all__ = ["DEFAULT_ANCHORS", "app"]

DEFAULT_ANCHORS = "audit-anchors.jsonl"
"""Where ``audit anchor`` writes when not told, under the home folder."""

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
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            events = remote.audit_events(subject=subject, action=action, actor=actor, limit=limit)
    else:
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


AnchorPlace = Annotated[
    str | None,
    typer.Option(
        "--anchor",
        help="Anchor file or fsspec URL to check against (default: home/audit-anchors.jsonl"
        " when it exists).",
    ),
]


def _anchor_place(cli: CliContext, given: str | None) -> str:
    return given if given is not None else str(cli.settings.home / DEFAULT_ANCHORS)


@app.command("verify")
@handle_errors
def verify(ctx: typer.Context, anchor: AnchorPlace = None, as_json: JsonFlag = False) -> None:
    """Check the hash chain, each event's MAC and every anchor; name the first edited,
    deleted, reordered or rewritten event, or a dropped tail."""
    from modelplane.store.audit_anchors import read_anchors

    cli: CliContext = ctx.obj
    place = _anchor_place(cli, anchor)
    use = anchor is not None or Path(place).exists()
    anchors = read_anchors(place) if use else []
    with registry_from(cli) as registry:
        report = registry.verify_audit(anchors)
    if as_json:
        emit_json({"ok": True, **asdict(report), "anchor": place if use else None})
        return
    if report.events == 0:
        console.print("audit log is empty")
        return
    console.print(f"[green]audit log intact[/]: {report.events} events")
    if report.unkeyed:
        console.print(
            f"[yellow]{report.unkeyed} events have no MAC[/] (written before the audit key"
            " existed: checked by hash only)"
        )
    if anchors:
        plural = "" if report.anchors == 1 else "s"
        console.print(f"consistent with {report.anchors} anchor{plural} in {place}")
    else:
        console.print("[yellow]no anchors checked[/]: a dropped tail would go unseen")


@app.command("anchor")
@handle_errors
def anchor(
    ctx: typer.Context,
    to: Annotated[
        str | None,
        typer.Option(help="Append-only file or fsspec URL (default: home/audit-anchors.jsonl)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify the chain, then append its signed head to an anchor file kept apart from
    the database."""
    from modelplane.store.audit_anchors import append_anchor, read_anchors

    cli: CliContext = ctx.obj
    place = _anchor_place(cli, to)
    earlier = _existing(place, read_anchors)
    with registry_from(cli) as registry:
        made = registry.anchor_audit(earlier)
    append_anchor(place, made)
    if as_json:
        emit_json({"seq": made.seq, "hash": made.hash, "at": made.at, "to": place})
        return
    console.print(f"anchored seq {made.seq} ({made.hash[:16]}…) to {place}")


def _existing(place: str, read: Callable[[str], list[Anchor]]) -> list[Anchor]:
    # A place not written yet has no anchors; any other read error stops the anchoring.
    try:
        return read(place)
    except NotFound:
        return []

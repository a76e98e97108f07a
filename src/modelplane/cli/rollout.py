"""``modelplane rollout | pause | resume | promote | rollback``: safe change of an endpoint.

``rollout`` records a ``Rollout`` resource; the controller inside ``modelplane up`` moves
traffic step by step as its gates allow. The other commands are recorded on the resource
for the controller to apply; ``rollback`` also puts all traffic back on stable itself, so
the gateway serves stable within a second of the command returning.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors

if TYPE_CHECKING:
    from modelplane.core.rollout import Command

__all__ = ["register"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
EndpointArg = Annotated[str, typer.Argument(help="The endpoint being rolled out.")]


def _spec_document(
    endpoint: str, to: str | None, strategy: str | None, file: Path | None
) -> dict[str, Any]:
    from modelplane.controlplane.apply import load_documents
    from modelplane.errors import InvalidSpec

    document: dict[str, Any] = {"kind": "Rollout"}
    if file is not None:
        documents = load_documents(file)
        if len(documents) != 1:
            raise InvalidSpec(f"{file}: expected one Rollout document, found {len(documents)}")
        document |= documents[0]
    document["endpoint"] = endpoint
    if to is not None:
        document["to"] = to
    if strategy is not None:
        document["strategy"] = strategy
        if file is None or "steps" not in document:
            document.pop("steps", None)  # the strategy's own steps
    return document


@handle_errors
def rollout(
    ctx: typer.Context,
    endpoint: EndpointArg,
    to: Annotated[str | None, typer.Option("--to", help="The new model version.")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="canary, shadow-then-canary or blue-green.")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Rollout YAML.")] = None,
    reason: Annotated[str, typer.Option(help="Why: recorded in the audit log.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Start moving ENDPOINT's traffic to a new model version, judged by gates."""
    from modelplane.controlplane.rollouts import start_rollout
    from modelplane.spec.io import parse
    from modelplane.spec.rollout import RolloutSpec

    cli: CliContext = ctx.obj
    document = _spec_document(endpoint, to, strategy, file)
    spec = parse(RolloutSpec, document, what="Rollout")
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            started = remote.start_rollout(document, reason=reason)
    else:
        with registry_from(cli) as registry:
            resource = start_rollout(
                registry, spec, actor=cli.actor, now=time.time(), reason=reason
            )
        started = {"name": resource.name, "generation": resource.generation, **resource.spec}
    if as_json:
        emit_json(started)
        return
    steps = ", ".join(
        f"shadow {s.percent:g}%" if s.kind == "shadow" else f"{s.weight:g}%" for s in spec.steps
    )
    console.print(
        f"rollout/{endpoint} started: {started['stable']} -> {spec.to}"
        f" ({spec.strategy.value}: {steps})"
    )


def _command(ctx: typer.Context, endpoint: str, cmd: Command, reason: str, as_json: bool) -> None:
    # The store alone, not the registry: a rollback is typed in a hurry.
    from modelplane.controlplane.rollout_commands import record_command, rollback_traffic
    from modelplane.core.rollout import Command
    from modelplane.security.keys import audit_key_from
    from modelplane.store.audit import bind_key
    from modelplane.store.db import open_engine

    cli: CliContext = ctx.obj
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            answer = remote.rollout_command(endpoint, cmd.value, reason=reason)
        phase, changed, moved = answer["phase"], bool(answer["changed"]), bool(answer["moved"])
    else:
        engine = open_engine(cli.settings.resolved_database_url())
        bind_key(engine, audit_key_from(cli.settings))
        try:
            done = record_command(
                engine, endpoint, cmd, actor=cli.actor, now=time.time(), reason=reason
            )
            moved = cmd is Command.ROLLBACK and rollback_traffic(
                engine, endpoint, actor=cli.actor, reason=reason
            )
        finally:
            engine.dispose()
        phase, changed = done.state.phase.value, done.changed
    if as_json:
        emit_json({"endpoint": endpoint, "command": cmd.value, "phase": phase, "changed": changed})
        return
    if not changed:
        console.print(f"rollout/{endpoint}: {_unchanged(cmd, phase)}; nothing recorded")
        return
    note = "; all traffic back on stable" if moved else ""
    console.print(f"rollout/{endpoint}: {cmd.value} recorded (now {phase}){note}")


def _unchanged(cmd: Command, phase: str) -> str:
    if cmd.value == "resume":
        return f"not paused (it is {phase}), nothing to resume"
    return f"already {phase}"


def _command_for(name: str, help_text: str) -> Any:
    @handle_errors
    def run(
        ctx: typer.Context,
        endpoint: EndpointArg,
        reason: Annotated[str, typer.Option(help="Why: recorded in the audit log.")] = "",
        as_json: JsonFlag = False,
    ) -> None:
        from modelplane.core.rollout import Command

        _command(ctx, endpoint, Command(name), reason, as_json)

    run.__doc__ = help_text
    run.__name__ = name
    return run


_COMMANDS = {
    "pause": "Hold ENDPOINT's rollout at its current weights.",
    "resume": "Continue a paused rollout (its step's window starts afresh).",
    "promote": "Skip the remaining steps: all traffic and the champion alias to the new version.",
    "rollback": "All traffic back on stable now; the rollout ends.",
}


def register(app: typer.Typer) -> None:
    app.command("rollout")(rollout)
    for name, help_text in _COMMANDS.items():
        app.command(name)(_command_for(name, help_text))

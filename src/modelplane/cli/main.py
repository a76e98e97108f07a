"""The ``modelplane`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelplane import __version__
from modelplane.cli import (
    audit,
    contract,
    evidence,
    evidence_pack,
    features,
    jobs,
    keys,
    models,
    outcomes,
    remote,
    resources,
    serve,
    sim,
    tokens,
    up,
)
from modelplane.cli.context import CliContext
from modelplane.cli.policy import register as register_policy
from modelplane.cli.report import register as register_report
from modelplane.cli.rollout import register as register_rollout

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelplane",
    help="Host machine-learning models for many teams as one system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelplane {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(help="State folder (default $MODELPLANE_HOME or ~/.modelplane)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    ctx.obj = CliContext(home)


models.register(app)
resources.register(app)
serve.register(app)
up.register(app)
remote.register(app)
register_rollout(app)
evidence.register(app)
evidence_pack.register(app)
keys.register(app)
outcomes.register(app)
register_policy(app)
register_report(app)
app.add_typer(contract.app, name="contract")
app.add_typer(audit.app, name="audit")
app.add_typer(sim.app, name="sim")
app.add_typer(features.app, name="features")
app.add_typer(jobs.app, name="jobs")
app.add_typer(tokens.app, name="tokens")


def main() -> None:
    app()

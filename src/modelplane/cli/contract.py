"""``modelplane contract``: check a model against a contract, or two contract versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.models import resolve_manifest
from modelplane.cli.output import console, emit_json, handle_errors, table

if TYPE_CHECKING:
    from modelplane.core.compat import Incompatibility

__all__ = ["app"]

app = typer.Typer(help="Serving contracts and their compatibility.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _report(findings: list[Incompatibility], subject: str, as_json: bool) -> None:
    from modelplane.core.compat import ensure_compatible

    if as_json:
        emit_json({"compatible": not any(f.breaking for f in findings), "findings": findings})
    elif findings:
        table(
            None,
            ["severity", "field", "problem"],
            [(f.severity, f.field, f.problem) for f in findings],
        )
    if as_json and any(f.breaking for f in findings):
        raise SystemExit(3)
    ensure_compatible(findings, subject=subject)
    if not as_json:
        console.print(f"[green]compatible[/]: {subject}")


@app.command("check")
@handle_errors
def check(
    ctx: typer.Context,
    contract_file: Annotated[Path, typer.Argument(help="Contract YAML.")],
    model: Annotated[str, typer.Argument(help="name:version, name@alias, or a package folder.")],
    as_json: JsonFlag = False,
) -> None:
    """May this model serve an endpoint with this contract? Exits non-zero if not."""
    from modelplane.core.compat import check_signature
    from modelplane.core.fallback import check_fallback
    from modelplane.spec.contract import Contract
    from modelplane.spec.io import load_yaml

    cli: CliContext = ctx.obj
    contract = load_yaml(Contract, contract_file)
    check_fallback(contract.fallback, contract.outputs, field="fallback")
    manifest = resolve_manifest(cli, model)
    findings = check_signature(manifest.signature, contract)
    _report(findings, f"{model} against contract {contract.name} v{contract.version}", as_json)


@app.command("compare")
@handle_errors
def compare(
    old: Annotated[Path, typer.Argument(help="The contract callers rely on today.")],
    new: Annotated[Path, typer.Argument(help="The proposed contract.")],
    as_json: JsonFlag = False,
) -> None:
    """Can NEW replace OLD without breaking callers? Exits non-zero if not."""
    from modelplane.core.compat import compare_contracts
    from modelplane.spec.contract import Contract
    from modelplane.spec.io import load_yaml

    before, after = load_yaml(Contract, old), load_yaml(Contract, new)
    findings = compare_contracts(before, after)
    _report(findings, f"{after.name} v{before.version} -> v{after.version}", as_json)

"""``modelplane apply | get | delete``: declarative resources (endpoints, feature sets,
jobs, policies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.fast_commands import KIND_ALIASES, PLURALS, resource_summary
from modelplane.cli.output import console, emit_json, handle_errors, table
from modelplane.errors import InvalidSpec

__all__ = ["register"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _kind(text: str) -> str:
    kind = KIND_ALIASES.get(text.lower())
    if kind is None:
        known = "endpoints, policies, featuresets, rollouts, jobs"
        raise InvalidSpec(f"unknown kind '{text}' ({known})")
    return kind


def apply(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Option("--file", "-f", help="YAML file (repeat).")],
    reason: Annotated[str, typer.Option(help="Why: recorded in the audit log.")] = "",
    allow_breaking: Annotated[
        bool,
        typer.Option("--allow-breaking", help="Accept a contract version that breaks callers."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create or update resources; every document is checked before any is recorded.

    Kinds: Endpoint, FeatureSet, Job, Policy (rollouts: modelplane rollout -f).
    Every field, its type, default and meaning: docs/resources.md
    Examples: examples/endpoint.yaml, featureset.yaml, policy.yaml, job-batch-score.yaml
    """
    from modelplane.controlplane.apply import Applier, load_documents
    from modelplane.store.resources import ResourceStore

    cli: CliContext = ctx.obj
    documents = [doc for path in files for doc in load_documents(path)]
    if any(doc.get("kind") == "Job" for doc in documents):
        from modelplane.backends.jobs.planner import absolute_urls

        # a job's relative paths mean the submitter's folder, wherever the control plane runs
        cwd = str(Path.cwd())
        documents = [absolute_urls(d, cwd) if d.get("kind") == "Job" else d for d in documents]
    if cli.remote is not None:
        _apply_remote(cli, documents, reason=reason, allow_breaking=allow_breaking, as_json=as_json)
        return
    with registry_from(cli) as registry:
        # a job gets every check `jobs submit` and the server's apply route give it
        job_check = None
        if any(doc.get("kind") == "Job" for doc in documents):
            from modelplane.system.jobs import submit_check

            job_check = submit_check(registry, cli.settings.home)
        applier = Applier(
            registry, ResourceStore(registry.engine), actor=cli.actor, job_check=job_check
        )
        results = applier.apply_all(documents, reason=reason, allow_breaking=allow_breaking)
    if as_json:
        emit_json(results)
        return
    for result in results:
        console.print(
            f"{result.kind.lower()}/{result.name} {result.outcome} (generation {result.generation})"
        )
        for ref, target in result.resolved.items():
            if ref != target["ref"]:
                console.print(f"  {ref} -> {target['ref']}")
        for warning in result.warnings:
            console.print(f"  [yellow]warning[/] {warning.field}: {warning.problem}")


def _apply_remote(
    cli: CliContext,
    documents: list[dict[str, Any]],
    *,
    reason: str,
    allow_breaking: bool,
    as_json: bool,
) -> None:
    from modelplane.cli.remote import Remote

    assert cli.remote is not None
    with Remote(cli.remote) as remote:
        results = remote.apply(documents, reason=reason, allow_breaking=allow_breaking)
    if as_json:
        emit_json(results)
        return
    for result in results:
        console.print(
            f"{result['kind'].lower()}/{result['name']} {result['outcome']}"
            f" (generation {result['generation']})"
        )
        for ref, target in result["resolved"].items():
            if ref != target["ref"]:
                console.print(f"  {ref} -> {target['ref']}")
        for warning in result["warnings"]:
            console.print(f"  [yellow]warning[/] {warning['field']}: {warning['problem']}")


def get(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="endpoints or policies")],
    name: Annotated[str | None, typer.Argument(help="One resource by name.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show desired state (and observed status) of resources."""
    from modelplane.store.resources import ResourceStore

    cli: CliContext = ctx.obj
    resolved_kind = _kind(kind)
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            found = remote.resources(resolved_kind, name)
    else:
        with registry_from(cli) as registry:
            store = ResourceStore(registry.engine)
            found = [store.get(resolved_kind, name)] if name else store.list(resolved_kind)
    if as_json:
        emit_json(
            [
                {
                    "kind": r.kind,
                    "name": r.name,
                    "generation": r.generation,
                    "spec": r.spec,
                    "status": r.status,
                    "updated_at": r.updated_at,
                }
                for r in found
            ]
        )
        return
    table(
        PLURALS.get(resolved_kind, f"{resolved_kind.lower()}s"),
        ["name", "generation", "summary", "updated"],
        [
            (r.name, r.generation, resource_summary(r.spec), f"{r.updated_at:%Y-%m-%d %H:%M:%S}")
            for r in found
        ],
    )


def delete(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="endpoint or policy")],
    name: Annotated[str, typer.Argument(help="Resource name.")],
    reason: Annotated[str, typer.Option(help="Why: recorded in the audit log.")] = "",
) -> None:
    """Delete a resource (audited)."""
    from modelplane.store.resources import ResourceStore

    cli: CliContext = ctx.obj
    resolved_kind = _kind(kind)
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            remote.delete(resolved_kind, name, reason=reason)
    else:
        with registry_from(cli) as registry:
            store = ResourceStore(registry.engine)
            store.delete(resolved_kind, name, actor=cli.actor, reason=reason)
    console.print(f"{resolved_kind.lower()}/{name} deleted")


def register(app: typer.Typer) -> None:
    for name, func in (("apply", apply), ("get", get), ("delete", delete)):
        app.command(name)(handle_errors(func))

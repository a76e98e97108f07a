"""``modelplane nodes | why | policy diff | policy history``: the cluster and its rules.

``nodes`` lists the local machine (detected) and the nodes declared in
``$MODELPLANE_HOME/cluster.yaml`` (or ``--cluster FILE``). ``why`` answers in one line where
an endpoint's replicas go, or why they wait, under the applied policy. ``policy diff``
compares the applied policy with a file, or two of its generations, path by path, and exits
like ``diff``: 0 when equal, 1 when different.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table

if TYPE_CHECKING:
    from modelplane.core.diff import Change
    from modelplane.spec.cluster import ClusterSpec

__all__ = ["app", "job_why_line", "register"]

app = typer.Typer(help="The applied policy: its history and what changed.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ClusterOption = Annotated[
    Path | None,
    typer.Option(
        "--cluster", help="Declared nodes (default: $MODELPLANE_HOME/cluster.yaml if present)."
    ),
]
NameOption = Annotated[
    str | None, typer.Option("--name", help="Which policy (default: the one applied).")
]


def _cluster(cli: CliContext, path: Path | None) -> ClusterSpec:
    from modelplane.controlplane.nodes import live_cluster
    from modelplane.errors import InvalidSpec

    if path is not None and not path.is_file():
        raise InvalidSpec(f"{path}: no such file")
    return live_cluster(path or cli.settings.home / "cluster.yaml")


RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="MODELPLANE_RAY_ADDRESS",
        help="A Ray cluster's nodes instead (warns when it is open to strangers).",
    ),
]


@handle_errors
def nodes(
    ctx: typer.Context,
    cluster: ClusterOption = None,
    as_json: JsonFlag = False,
    ray_address: RayAddressOption = None,
) -> None:
    """The nodes workloads may be placed on: this machine and those declared."""
    if ray_address:
        from modelplane.cli.ray_nodes import show_ray_nodes

        show_ray_nodes(ray_address, as_json)
        return
    spec = _cluster(ctx.obj, cluster)
    if as_json:
        emit_json(list(spec.nodes))
        return
    table(
        "nodes",
        ["name", "cpu", "memory", "gpus", "cost/h", "labels"],
        [
            (
                n.name,
                f"{n.cpu_milli / 1000:g}",
                f"{n.memory_mib / 1024:.1f} GiB",
                f"{n.gpus.count} x {n.gpus.model}" if n.gpus else "-",
                f"{n.cost_per_hour:g}",
                " ".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
            )
            for n in spec.nodes
        ],
    )


@handle_errors
def why(
    ctx: typer.Context,
    workload: Annotated[
        str, typer.Argument(help="An endpoint, a replica (ENDPOINT/ROUTE/INDEX) or a job.")
    ],
    cluster: ClusterOption = None,
    as_json: JsonFlag = False,
    ray_address: RayAddressOption = None,
) -> None:
    """Where a workload is placed, or why it is pending or preempted, in one line."""
    from modelplane.controlplane.why import explain
    from modelplane.store.jobs import JobStore

    if ray_address:
        from modelplane.cli.ray_nodes import why_on_ray

        if why_on_ray(ray_address, workload, as_json):
            return
    cli: CliContext = ctx.obj
    spec = _cluster(cli, cluster)
    with registry_from(cli) as registry:
        job = JobStore(registry.engine).find(workload)
        if job is not None:  # a job's reason is the queue's own, written on every pass
            line = job_why_line(job.name, job.team, job.tier, job.state.value, job.reason)
            if as_json:
                emit_json({"line": line, "job": job})
            else:
                console.print(line, markup=False)
            return
        found = explain(registry, spec, workload, time.time())
    if as_json:
        emit_json(
            {
                "line": found.line,
                "workloads": found.workloads,
                "decisions": found.decisions,
                "serving": found.serving,
                "nodes": [n.name for n in spec.nodes],
            }
        )
        return
    console.print(found.line, markup=False)


_JOB_VERBS = {
    "pending": "is pending",
    "queued": "is queued",
    "running": "is running",
    "succeeded": "has succeeded",
    "failed": "has failed",
    "cancelled": "was cancelled",
}
# Reasons that only restate the state: the store's markers before the queue's first pass,
# or a running job's last queue line.
_BARE_REASONS = frozenset({"", "submitted", "queued", "running"})
_NO_PASS_YET = {
    "pending": "its inputs are not checked yet (the job controller of `modelplane up` plans it)",
    "queued": "planned, not yet considered by the queue (it runs under `modelplane up`)",
}


def job_why_line(name: str, team: str, tier: str, state: str, reason: str) -> str:
    """``job x (team risk, tier batch) is queued: waiting for quota: ...``: one sentence,
    the state said once, whatever the reason's wording."""
    head = f"job {name} (team {team}, tier {tier}) {_JOB_VERBS.get(state, f'is {state}')}"
    if reason in _BARE_REASONS or reason == state:
        detail = _NO_PASS_YET.get(state)
        return head if detail is None else f"{head}: {detail}"
    if reason.startswith(f"{state} "):  # "cancelled by alice": "was cancelled by alice"
        return f"{head} {reason[len(state) + 1 :]}"
    return f"{head}: {reason}"


def _spec_from(file: Path) -> dict[str, Any]:
    from modelplane.controlplane.apply import load_documents
    from modelplane.errors import InvalidSpec
    from modelplane.spec.io import parse
    from modelplane.spec.policy import Policy

    documents = [d for d in load_documents(file) if d.get("kind") == "Policy"]
    if len(documents) != 1:
        raise InvalidSpec(f"{file}: expected one Policy document, found {len(documents)}")
    # Dumped as apply stores it, so defaults spelled out or left out compare equal.
    return parse(Policy, documents[0], what="Policy").model_dump(mode="json")


def _print_changes(changes: tuple[Change, ...], before: str, after: str, as_json: bool) -> None:
    if as_json:
        emit_json({"from": before, "to": after, "equal": not changes, "changes": changes})
        return
    if not changes:
        console.print(f"no changes between {before} and {after}")
        return
    console.print(f"--- {before}\n+++ {after}", markup=False)
    for change in changes:
        console.print(change.line, markup=False)


@app.command("diff")
@handle_errors
def diff(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="Compare the applied policy with this file.")
    ] = None,
    from_gen: Annotated[
        int | None,
        typer.Option("--from", help="Generation to compare from (negative: back from current)."),
    ] = None,
    to_gen: Annotated[
        int | None, typer.Option("--to", help="Generation to compare to (default: current).")
    ] = None,
    name: NameOption = None,
    as_json: JsonFlag = False,
) -> None:
    """What changed, one line per path; exits 0 when equal, 1 when different."""
    from modelplane.controlplane.history import generation
    from modelplane.core.diff import diff as semantic_diff

    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        name = name or _applied_name(registry)
        if file is not None:
            old = generation(registry, "Policy", name, -1 if from_gen is None else from_gen)
            before, after = old.spec, _spec_from(file)
            labels = (f"policy/{name} generation {old.generation}", str(file))
        else:
            new = generation(registry, "Policy", name, -1 if to_gen is None else to_gen)
            start = new.generation - 1 if from_gen is None else from_gen
            old = generation(registry, "Policy", name, start) if start != 0 else new
            before, after = old.spec, new.spec
            labels = (f"generation {old.generation}", f"generation {new.generation}")
    changes = semantic_diff(before, after)
    _print_changes(changes, *labels, as_json)
    if changes:
        raise typer.Exit(1)


@app.command("history")
@handle_errors
def history(ctx: typer.Context, name: NameOption = None, as_json: JsonFlag = False) -> None:
    """Every generation of the policy: when, who, why, and how many paths changed."""
    from modelplane.controlplane.history import generations
    from modelplane.core.diff import diff as semantic_diff

    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        name = name or _applied_name(registry)
        found = generations(registry, "Policy", name)
    rows: list[dict[str, Any]] = []
    previous: dict[str, Any] = {}
    for gen in found:
        changed = len(semantic_diff(previous, gen.spec)) if gen.generation > 1 else 0
        rows.append({**_row(gen), "changes": changed})
        previous = gen.spec
    if as_json:
        emit_json(rows)
        return
    table(
        f"policy/{name}",
        ["generation", "at", "actor", "changes", "reason"],
        [
            (r["generation"], f"{r['at']:%Y-%m-%d %H:%M:%S}", r["actor"], r["changes"], r["reason"])
            for r in rows
        ],
    )


def _applied_name(registry: Any) -> str:
    """The policy in force: the one applied (apply keeps at most one), else ``default``."""
    from modelplane.store.resources import ResourceStore

    found = ResourceStore(registry.engine).list("Policy")
    return found[0].name if found else "default"


def _row(gen: Any) -> dict[str, Any]:
    return {"generation": gen.generation, "at": gen.at, "actor": gen.actor, "reason": gen.reason}


def register(root: typer.Typer) -> None:
    root.command("nodes")(nodes)
    root.command("why")(why)
    root.add_typer(app, name="policy")

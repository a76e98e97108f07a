"""``modelplane report cost|usage``: what each team used, reserved and left idle, and its cost.

Both read the usage intervals that ``up`` samples for serving replicas and that the job
controller records for shards, priced by the cluster model's ``cost_per_hour`` (see
``docs/usage.md``). Against the embedded store they read it directly; after ``modelplane
login`` they ask the control API, which answers the same documents.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.output import console, emit_json, handle_errors, table

if TYPE_CHECKING:
    from modelplane.observe.usage_report import Period

__all__ = ["app", "cost", "usage"]

app = typer.Typer(help="Cost and usage by team, endpoint and job.", no_args_is_help=True)

Teams = Annotated[
    list[str] | None, typer.Option("--team", help="Only this team (repeat for more).")
]
Since = Annotated[
    str, typer.Option(help="How far back: a duration such as 7d, 12h, 30m (weeks: 2w).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _document(cli: CliContext, which: str, since: str, teams: list[str] | None,
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    from modelplane.observe.usage_report import parse_period

    period = parse_period(since, time.time())  # a bad --since fails before any I/O
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            params: dict[str, Any] = {"since": since, "team": teams or [], **extra}
            found: dict[str, Any] = remote.get(f"/v1/reports/{which}", params)
            return found
    return _embedded(cli, which, period, teams, **extra)


def _embedded(cli: CliContext, which: str, period: Period, teams: list[str] | None,
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    from modelplane.observe.usage_report import cost_document, usage_document
    from modelplane.store.db import open_engine

    engine = open_engine(cli.settings.resolved_database_url())
    try:
        if which == "cost":
            return cost_document(engine, period, teams=teams)
        return usage_document(engine, period, teams=teams, **extra)
    finally:
        engine.dispose()


def _hours(value: float) -> str:
    return f"{value:,.2f}"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _nothing_yet(since: str, team: list[str] | None) -> str:
    whose = f" for team {', '.join(team)}" if team else ""
    return (
        f"nothing recorded{whose} since {since}: `modelplane up` records what its replicas and"
        " job shards reserve and use (docs/usage.md)"
    )


UNPRICED = (
    "no node had a price, so every cost reads 0: give this machine and each node a"
    " cost_per_hour in the cluster model ($MODELPLANE_HOME/cluster.yaml, docs/usage.md#prices)"
)


@app.command("cost")
@handle_errors
def cost(
    ctx: typer.Context, team: Teams = None, since: Since = "7d", as_json: JsonFlag = False
) -> None:
    """Each team's cost over the period, jobs and serving replicas together: resource-hours
    used and reserved, the cost of what it reserved and left unused, and the nodes'
    unreserved (idle) cost, so that teams + idle = nodes."""
    cli: CliContext = ctx.obj
    document = _document(cli, "cost", since, team)
    if as_json:
        emit_json(document)
        return
    if not document["teams"] and not document["nodes_cost"]:
        console.print(_nothing_yet(since, team))
        return
    rows = []
    for t in document["teams"]:
        used, held = t["used_hours"], t["reserved_hours"]
        rows.append((
            t["team"],
            f"{_hours(used['cpu'])} / {_hours(held['cpu'])}",
            f"{_hours(used['memory'])} / {_hours(held['memory'])}",
            f"{_hours(used['gpu'])} / {_hours(held['gpu'])}",
            _share(t["idle_share"]),
            _money(t["serving_cost"]),
            _money(t["jobs_cost"]),
            _money(t["cost"]),
            _money(t["waste"]),
            f"{t['jobs']} / {t['shards']} / {t['queue_wait_s']:,.0f} s" if t["shards"] else "",
        ))  # fmt: skip
    table(
        f"cost since {since}",
        ["team", "CPU core-h used/reserved", "memory GiB-h used/reserved",
         "GPU-h used/reserved", "left idle", "serving", "jobs", "cost", "idle in reservation",
         "jobs / shards / queue wait"],
        rows,
    )  # fmt: skip
    console.print(
        f"teams {_money(document['teams_cost'])} + unreserved idle "
        f"{_money(document['idle_cost'])} = nodes {_money(document['nodes_cost'])}"
        + (" (all teams)" if not team else " (every team's, not only those shown)")
    )
    if not document["nodes_cost"]:
        console.print(UNPRICED)


@app.command("usage")
@handle_errors
def usage(
    ctx: typer.Context,
    team: Teams = None,
    since: Since = "7d",
    top: Annotated[int, typer.Option(min=0, help="Name this many of the worst.")] = 5,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw reserved against peak and mean use (PNG).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Endpoints and jobs by what they reserve against what they use, the most reserved and
    least used first, and what reserving each one's observed peak would save."""
    cli: CliContext = ctx.obj
    document = _document(cli, "usage", since, team, top=top)
    if plot is not None:
        from modelplane.cli.report_plot import plot_usage

        plot_usage(document, plot, title=f"reserved and used since {since}")
    if as_json:
        emit_json(document)
        return
    if not document["groups"]:
        console.print(_nothing_yet(since, team))
        return
    rows = []
    for g in document["groups"]:
        held, peak, util = g["reserved"], g["peak"], g["utilization"]
        rows.append((
            g["name"] if g["kind"] == "replica" else f"job {g['name']}",
            g["team"],
            g["replicas"],
            f"{held['cpu']:g} / {peak['cpu']:.2f} / {_share(util['cpu'])}",
            f"{held['memory']:.2f} / {peak['memory']:.2f} / {_share(util['memory'])}",
            f"{held['gpu']:g} / {peak['gpu']:.2f} / {_share(util['gpu'])}" if held["gpu"] else "",
            _share(g["idle_share"]),
            _money(g["cost"]),
            _money(g["saving_at_peak"]),
        ))  # fmt: skip
    table(
        f"usage since {since} (per replica: reserved / peak / used share)",
        ["endpoint", "team", "replicas", "CPU cores", "memory GiB", "GPU", "left idle", "cost",
         "saving at peak"],
        rows,
    )  # fmt: skip
    worst = document["reserve_most_use_least"]
    if worst:
        console.print(f"reserve most, use least: {', '.join(worst)}")
    console.print(
        f"reserving each one's observed peak would save {_money(document['saving_at_peak'])}"
        f" of {_money(document['cost'])}"
    )
    if not document["cost"]:
        console.print(UNPRICED)
    if plot is not None:
        console.print(f"plot: {plot}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="report")

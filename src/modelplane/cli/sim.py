"""``modelplane sim``: replay a trace under two policies before anyone applies one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelplane.cli.output import console, handle_errors

__all__ = ["app"]

app = typer.Typer(help="Try policies on real or synthetic traces.", no_args_is_help=True)


@app.command("run")
@handle_errors
def run(
    trace: Annotated[
        str,
        typer.Option(help="openb, openb-gpuspec33, synthetic, or a folder of openb-format CSVs."),
    ],
    policy: Annotated[Path, typer.Option(help="Policy YAML.")],
    vs: Annotated[Path | None, typer.Option(help="A second policy to compare with.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds to average over.")] = 10,
    trace_dir: Annotated[
        Path | None, typer.Option(help="Where the openb CSVs are (default ../shared/traces).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for summary.json and PNG plots.")] = Path(
        "sim-out"
    ),
    target: Annotated[
        float, typer.Option(help="Inflate arrivals to this share of GPU capacity.")
    ] = 1.3,
    sample: Annotated[
        int | None,
        typer.Option(help="Sample this many pods at random per seed, and the same share of nodes."),
    ] = None,
    nodes: Annotated[
        str,
        typer.Option(
            help="Node list: gpu (the paper's 1,213 GPU nodes), all (with CPU-only), or a CSV."
        ),
    ] = "gpu",
    pods: Annotated[
        str,
        typer.Option(help="Pod list variant in the folder (default, gpuspec33, ...) or a CSV."),
    ] = "default",
    experiment: Annotated[
        str,
        typer.Option(help="inflation (the paper's: nothing departs, no preemption) or departures."),
    ] = "inflation",
    durations: Annotated[
        str,
        typer.Option(help="Departures: trace (its own, else exponential) or exp:SECONDS."),
    ] = "trace",
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
) -> None:
    """Replay TRACE under POLICY (and VS) with the production decision functions."""
    from modelplane.sim.cli import sim_run

    sim_run(
        trace,
        policy,
        vs,
        seeds=seeds,
        trace_dir=trace_dir,
        out_dir=out,
        target=target,
        sample=sample,
        nodes=nodes,
        pods=pods,
        experiment=experiment,
        durations=durations,
        plots=plots,
        console=console,
    )


@app.command("mixed")
@handle_errors
def mixed(
    policy: Annotated[Path, typer.Option(help="Policy YAML.")],
    vs: Annotated[Path | None, typer.Option(help="A second policy to compare with.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds to average over.")] = 3,
    hours: Annotated[float, typer.Option(help="Simulated hours (a day by default).")] = 24.0,
    job_rate: Annotated[float, typer.Option(help="Poisson job arrivals per hour.")] = 30.0,
    trace_pods: Annotated[
        int, typer.Option(help="Best-effort openb pods to add as jobs (0: none).")
    ] = 150,
    trace_dir: Annotated[
        Path | None, typer.Option(help="Where the openb CSVs are (default ../shared/traces).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for mixed.json.")] = Path("sim-out"),
) -> None:
    """Jobs and serving on one cluster: cost per finished job, floor violations, GPU idle."""
    from modelplane.sim.cli import sim_mixed

    sim_mixed(
        policy,
        vs,
        seeds=seeds,
        trace_dir=trace_dir,
        trace_pods=trace_pods,
        hours=hours,
        job_rate_per_h=job_rate,
        out_dir=out,
        console=console,
    )

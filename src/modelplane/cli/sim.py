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
    sample: Annotated[int | None, typer.Option(help="Use only this many pods.")] = None,
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
        plots=plots,
        console=console,
    )

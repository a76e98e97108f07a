"""``modelplane up``: the embedded system in one process (built by :mod:`modelplane.system`;
this command only turns its flags into options).

The gateway (data plane), the control-plane API, the endpoint controller and the rollout
controller share one event loop over the state store. ``apply`` (CLI or API) records
desired state; the endpoint controller notices within a second and updates the gateway,
which starts new workers before it routes to them. The rollout controller moves route
weights by re-applying endpoints; the gateway carries a weight change out without
restarting a worker. SIGTERM or SIGINT stops the controllers and the API, then drains the
gateway: accepted requests are answered before the workers stop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.output import console, handle_errors

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelplane.cli.tokens import ServerAuth
    from modelplane.security.oidc import OidcConfig
    from modelplane.system.live import SystemOptions

__all__ = ["register", "up"]


async def _run(
    cli: CliContext,
    options: SystemOptions,
    *,
    auth: bool = True,
    predict_auth: bool | None = None,
    oidc: OidcConfig | None = None,
) -> None:
    from modelplane.cli.tokens import server_auth
    from modelplane.system.live import StartupFailed, run_until_signalled

    def guard(engine: Engine) -> ServerAuth:
        # The audit actor is a token's subject (or, without auth, whoever started the server).
        host = options.host
        return server_auth(cli, engine, host, auth=auth, predict_auth=predict_auth, oidc=oidc)

    try:
        await run_until_signalled(cli.settings, options, guard, announce=console.print)
    except StartupFailed:
        raise typer.Exit(1) from None


@handle_errors
def up(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    api_port: Annotated[int, typer.Option(help="Control-plane API port.")] = 8080,
    sample_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of successful requests kept in full in the prediction log (errors and"
            " fallbacks always are; every other request keeps a brief record for an hour, so"
            " 'modelplane explain' answers for any request). 1.0 keeps every one.",
        ),
    ] = 0.01,
    log_retain: Annotated[
        int, typer.Option(min=1, help="Prediction log rows kept in full (the newest).")
    ] = 100_000,
    auth: Annotated[
        bool, typer.Option(help="Require API tokens (see 'modelplane tokens').")
    ] = True,
    predict_auth: Annotated[
        bool | None,
        typer.Option(help="Require tokens on predictions too (default: off on loopback only)."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow --no-auth on a non-loopback address.")
    ] = False,
    oidc_issuer: Annotated[
        str | None,
        typer.Option(envvar="MODELPLANE_OIDC_ISSUER", help="Also accept this issuer's JWTs."),
    ] = None,
    oidc_audience: Annotated[
        str, typer.Option(envvar="MODELPLANE_OIDC_AUDIENCE", help="The JWTs' audience.")
    ] = "modelplane",
    backend: Annotated[
        str,
        typer.Option(
            envvar="MODELPLANE_BACKEND",
            help="Where replicas run: 'local' (worker processes of this machine) or 'ray'"
            " (actors on the Ray cluster at --ray-address, placed by modelplane's policy).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="MODELPLANE_RAY_ADDRESS",
            help="The Ray cluster's GCS address, HOST:PORT (its token from RAY_AUTH_TOKEN).",
        ),
    ] = None,
    gateways: Annotated[
        int,
        typer.Option(
            help="Gateway processes sharing the gateway port (SO_REUSEPORT): this one and"
            " N-1 children, each with its own workers; evidence is summed over all.",
        ),
    ] = 1,
) -> None:
    """Run the gateway, the control-plane API and the controllers until SIGTERM."""
    import uvloop

    from modelplane.cli.tokens import refuse_insecure
    from modelplane.observe.predlog import PredictionLogConfig
    from modelplane.security.oidc import OidcConfig
    from modelplane.system.live import SystemOptions

    cli: CliContext = ctx.obj
    refuse_insecure(host, auth=auth, insecure=insecure)
    cli.settings.home.mkdir(parents=True, exist_ok=True)
    evidence = PredictionLogConfig(sample_rate=sample_rate, retain_rows=log_retain)
    oidc = None if oidc_issuer is None else OidcConfig(oidc_issuer, oidc_audience)
    options = SystemOptions(
        host,
        port,
        api_port,
        actor=cli.actor,
        evidence=evidence,
        backend=backend,  # type: ignore[arg-type]  # SystemOptions names a bad one
        ray_address=ray_address,
        gateways=gateways,
        oidc=oidc,
    )
    uvloop.run(_run(cli, options, auth=auth, predict_auth=predict_auth, oidc=oidc))
    console.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("up")(up)

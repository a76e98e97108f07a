"""``modelplane up``: the embedded system in one process.

The gateway (data plane), the control-plane API, the endpoint controller and the rollout
controller share one event loop over the state store. ``apply`` (CLI or API) records
desired state; the endpoint controller notices within a second and updates the gateway,
which starts new workers before it routes to them. The rollout controller moves route
weights by re-applying endpoints; the gateway carries a weight change out without
restarting a worker. SIGTERM or SIGINT stops the controllers and the API, then drains the
gateway: accepted requests are answered before the workers stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.job_planner import run_jobs, submit_check
from modelplane.cli.output import console, handle_errors
from modelplane.cli.rollout import GatewayEvidence

if TYPE_CHECKING:
    import uvicorn
    from sqlalchemy import Engine

    from modelplane.controlplane.endpoints import EndpointPlan, ServedEndpoint
    from modelplane.controlplane.slo import EndpointCounters
    from modelplane.dataplane.gateway import Gateway
    from modelplane.observe.predlog import PredictionLogConfig
    from modelplane.security.oidc import OidcConfig

__all__ = ["GatewaySlo", "GatewayTarget", "register", "up"]

log = logging.getLogger("modelplane.up")


class GatewayTarget:
    """Adapts the endpoint controller's plans to the gateway, one endpoint at a time."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def expect(self, endpoints: Collection[str]) -> None:
        self.gateway.expect(endpoints)

    async def put(self, plan: EndpointPlan) -> None:
        from modelplane.dataplane.endpoint_runtime import EndpointConfig, ModelSource

        models = {
            ref: ModelSource(m.label, m.directory, m.manifest, m.digest)
            for ref, m in plan.models.items()
        }
        await self.gateway.put(EndpointConfig(plan.endpoint, models, plan.featuresets))

    async def remove(self, endpoint: str) -> None:
        await self.gateway.remove(endpoint)

    def served(self, endpoint: str) -> ServedEndpoint | None:
        from modelplane.controlplane.endpoints import ServedEndpoint

        runtime = self.gateway.handler.endpoints.get(endpoint)
        if runtime is None:
            return None
        weights = [route.weight for route in runtime.endpoint.routes]
        return ServedEndpoint(
            routes=tuple(
                (r.ref, r.target.label, w) for r, w in zip(runtime.routes, weights, strict=True)
            ),
            shadows=tuple((s.ref, s.target.label, s.percent) for s in runtime.shadows),
            ready=all(
                r.target.ready for r, w in zip(runtime.routes, weights, strict=True) if w > 0
            ),
        )

    def replica_counts(self, endpoint: str) -> tuple[int, int]:
        """``(ready, total)`` worker processes over the endpoint's routes."""
        runtime = self.gateway.handler.endpoints.get(endpoint)
        if runtime is None:
            return 0, 0
        states = [r.state for route in runtime.routes for r in route.target.pool.replicas()]
        return sum(1 for state in states if state == "ready"), len(states)


class GatewaySlo:
    """Adapts the gateway to the SLO recorder's ``SloEvidence``.

    Counts what callers saw (the gateway's request counters), not the routes' evidence:
    shadow copies fill a version's route counters but never reach a caller. Available: an
    answer from a model (2xx that no fallback served). Unavailable: 5xx, 429 (shed) and
    fallback answers. Other 4xx are the caller's mistake and count for neither.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def served(self) -> dict[str, EndpointCounters]:
        from modelplane.controlplane.slo import EndpointCounters, Tally

        metrics = self.gateway.metrics
        good: dict[str, int] = {}
        total: dict[str, int] = {}
        for (endpoint, _, _, status), count in list(metrics.requests.items()):
            code = int(status)
            if 400 <= code < 500 and code != 429:
                continue
            total[endpoint] = total.get(endpoint, 0) + count
            if code < 400:
                good[endpoint] = good.get(endpoint, 0) + count
        for (endpoint, _), count in list(metrics.fallbacks.items()):
            good[endpoint] = good.get(endpoint, 0) - count
        fast: dict[str, int] = {}
        timed: dict[str, int] = {}
        slos = {name: r.endpoint.contract.slo for name, r in self.gateway.handler.endpoints.items()}
        for (endpoint, _, _), hist in list(metrics.latency.items()):
            slo = slos.get(endpoint)
            if slo is None:
                continue
            limit_s = slo.latency_ms / 1000.0
            within = sum(c for b, c in zip(hist.bounds, hist.counts, strict=False) if b <= limit_s)
            fast[endpoint] = fast.get(endpoint, 0) + within
            timed[endpoint] = timed.get(endpoint, 0) + sum(hist.counts)
        return {
            name: EndpointCounters(
                slo,
                {
                    # one counter set for the gateway's life: its counters only grow
                    "requests": Tally(
                        max(good.get(name, 0), 0),
                        total.get(name, 0),
                        fast.get(name, 0),
                        timed.get(name, 0),
                    )
                },
            )
            for name, slo in slos.items()
        }


def _server(
    app: Callable[..., Any], host: str, port: int, *, lifespan: Literal["on", "off"]
) -> uvicorn.Server:
    """A uvicorn server under the edge's limits: the gateway's own, or the API's."""
    import uvicorn

    from modelplane.dataplane.edge import API_EDGE, raise_fd_limit, server_options
    from modelplane.dataplane.gateway import Gateway

    raise_fd_limit()
    edge = app.config.edge if isinstance(app, Gateway) else API_EDGE
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan=lifespan,
        log_level="warning",
        access_log=False,
        **server_options(edge),
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    return server


def _outcome_recorder(engine: Engine) -> Callable[[asyncio.Event], Awaitable[None]]:
    """The outcome recorder's loop: every 10 s, so a regression found in labels shows in
    ``status`` soon after the labels arrive."""
    from modelplane.controlplane.outcomes import OutcomeRecorder

    recorder = OutcomeRecorder(engine)
    return lambda stop: recorder.run(stop, interval_s=10.0)


async def _run(
    cli: CliContext,
    host: str,
    port: int,
    api_port: int,
    evidence: PredictionLogConfig,
    *,
    auth: bool = True,
    predict_auth: bool | None = None,
    oidc: OidcConfig | None = None,
) -> None:
    from modelplane.cli.autoscale import GatewayConcurrency
    from modelplane.cli.gateway_usage import usage_sampler
    from modelplane.cli.tokens import server_auth
    from modelplane.controlplane.api import create_api
    from modelplane.controlplane.autoscaler import Autoscaler
    from modelplane.controlplane.degrader import Degrader
    from modelplane.controlplane.endpoints import EndpointController
    from modelplane.controlplane.loop import keep_running
    from modelplane.controlplane.rollouts import RolloutController
    from modelplane.controlplane.slo import SloRecorder
    from modelplane.dataplane.gateway import Gateway
    from modelplane.features.stores import open_online_store
    from modelplane.observe.outcomes import OutcomeStore
    from modelplane.observe.predlog import PredictionLog
    from modelplane.registry.service import open_registry
    from modelplane.security.keys import audit_key_from

    settings = cli.settings
    registry = open_registry(
        settings.resolved_database_url(),
        settings.resolved_artifact_url(),
        actor=cli.actor,
        audit_key=audit_key_from(settings),
    )
    # One store for both: the API's push writes what the gateway's join reads.
    online_store = open_online_store(settings.resolved_feature_store_url())
    # The audit actor is a token's subject (or, without auth, whoever started the server).
    guard = server_auth(cli, registry.engine, host, auth=auth, predict_auth=predict_auth, oidc=oidc)
    gateway = Gateway(
        [],
        sink=PredictionLog(registry.engine, evidence),
        online_store=online_store,
        auth=guard.predict,
        feedback=OutcomeStore(registry.engine),
    )
    api = create_api(
        registry,
        authenticator=guard.api,
        actor=cli.actor,
        online_store=online_store,
        gateway_url=f"http://{host}:{port}",
        job_check=submit_check(registry, settings.home),
    )
    controller = EndpointController(
        registry, GatewayTarget(gateway), settings.home / "cache" / "packages"
    )
    rollouts = RolloutController(registry, GatewayEvidence(gateway))
    autoscaler = Autoscaler(registry, GatewayConcurrency(gateway))
    degrader = Degrader(registry, GatewayConcurrency(gateway), target=gateway)
    slo = SloRecorder(registry.engine, GatewaySlo(gateway))
    usage = usage_sampler(registry.engine, gateway, settings)
    servers = [
        _server(gateway, host, port, lifespan="on"),
        _server(api, host, api_port, lifespan="off"),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Before the gateway listens: endpoints in the store answer 503 (retry) while they
        # start, never 404, and /v2/health/ready waits until each has started or failed.
        await controller.prime()
        for server in servers:
            await server.startup()
            if server.should_exit:
                raise typer.Exit(1)
        console.print(f"gateway  http://{host}:{port}  (Open Inference Protocol v2, records)")
        console.print(f"control  http://{host}:{api_port}  (console at /, API docs at /docs)")
        console.print(f"state    {settings.resolved_database_url()}")
        loops = [asyncio.create_task(server.main_loop()) for server in servers]
        # Each controller on its own: one that fails is logged and restarted, and neither
        # the gateway nor the other controllers stop with it.
        await asyncio.gather(
            *(
                keep_running(stop, run, log=log, what=what)
                for what, run in (
                    ("endpoint controller", controller.run),
                    ("rollout controller", rollouts.run),
                    ("SLO recorder", slo.run),
                    ("usage sampler", usage.run),
                    ("autoscaler", autoscaler.run),
                    ("degrader", degrader.run),
                    ("job controller", run_jobs(registry, settings.home, degrader)),
                    ("outcome recorder", _outcome_recorder(registry.engine)),
                )
            )
        )
        for server in reversed(servers):
            server.should_exit = True
        await asyncio.gather(*loops)
    finally:
        for server in reversed(servers):
            if server.started:
                await server.shutdown()
        online_store.close()
        registry.close()


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
) -> None:
    """Run the gateway, the control-plane API and the controllers until SIGTERM."""
    import uvloop

    from modelplane.cli.tokens import refuse_insecure
    from modelplane.observe.predlog import PredictionLogConfig
    from modelplane.security.oidc import OidcConfig

    cli: CliContext = ctx.obj
    refuse_insecure(host, auth=auth, insecure=insecure)
    cli.settings.home.mkdir(parents=True, exist_ok=True)
    evidence = PredictionLogConfig(sample_rate=sample_rate, retain_rows=log_retain)
    oidc = None if oidc_issuer is None else OidcConfig(oidc_issuer, oidc_audience)
    run = _run(cli, host, port, api_port, evidence, auth=auth, predict_auth=predict_auth, oidc=oidc)
    uvloop.run(run)
    console.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("up")(up)

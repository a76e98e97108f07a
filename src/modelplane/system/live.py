"""The live system, assembled from settings: the gateway, the control-plane API, the
controllers, and their lifecycle.

``modelplane up`` parses its flags into :class:`SystemOptions` and calls
:func:`run_until_signalled`; everything it runs is built here:

- the state store (registry and audit key), the online feature store, the prediction log
  and the outcome store;
- the gateway (data plane) and the API, each behind its own uvicorn server under the
  edge's limits;
- the controllers, each reading the gateway through :mod:`.gateway_views` (one typed
  snapshot): endpoints, rollouts, the SLO recorder, the usage sampler, the autoscaler, the
  degrader, jobs (shards as local processes, or Ray tasks on the Ray backend) and the
  outcome recorder.

Order matters. The endpoint controller primes the gateway before it listens, so endpoints
in the store answer 503 (retry) while they start, never 404. Each controller then runs on
its own (:func:`~modelplane.controlplane.loop.keep_running`): one that fails is logged and
restarted, and neither the gateway nor the other controllers stop with it. On stop, the
controllers end first, then the API, then the gateway drains: accepted requests are
answered before the workers stop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI
    from sqlalchemy import Engine

    from modelplane.controlplane.usage import UsageSampler
    from modelplane.core.backend import ExecutionBackend
    from modelplane.dataplane.gateway import Gateway
    from modelplane.dataplane.pool.hosted import PoolFactory
    from modelplane.features.base import OnlineStore
    from modelplane.observe.predlog import PredictionLogConfig
    from modelplane.registry.service import Registry
    from modelplane.security.auth import Authenticator, PredictAuthorizer
    from modelplane.security.oidc import OidcConfig
    from modelplane.settings import Settings
    from modelplane.system.backend_pool import BackendFleet
    from modelplane.system.gateways import GatewayFleet
    from modelplane.system.jobs import BackendCapacity

__all__ = [
    "CONTROLLERS",
    "LiveSystem",
    "ServingAuth",
    "StartupFailed",
    "SystemOptions",
    "local_node_name",
    "run_until_signalled",
    "server",
]

log = logging.getLogger("modelplane.up")

Loop = Callable[[asyncio.Event], Awaitable[Any]]

CONTROLLERS = (
    "endpoint controller",
    "node reader",
    "placement controller",
    "rollout controller",
    "SLO recorder",
    "usage sampler",
    "autoscaler",
    "degrader",
    "job controller",
    "outcome recorder",
)
"""What the live system runs beside its servers, in the order they start (the node reader
and the placement controller only with an execution backend other than local worker
processes)."""


class StartupFailed(Exception):
    """A server could not start (uvicorn has logged why, e.g. the port is taken)."""


class ServingAuth(Protocol):
    """Who may call: the API's authenticator and the gateway's predict check (``None``:
    nobody is asked). The caller chooses and announces them (``cli.tokens.server_auth``)."""

    @property
    def api(self) -> Authenticator | None: ...

    @property
    def predict(self) -> PredictAuthorizer | None: ...


def local_node_name(cluster_file: Path | None = None) -> str:
    """This machine's node name as the cluster model writes it: ``local.name`` in
    ``cluster_file`` when it names one, else the hostname, cleaned. A file that does not
    parse leaves the hostname (the usage sampler and ``modelplane nodes`` report it)."""
    from modelplane.controlplane.nodes import load_cluster, node_name
    from modelplane.errors import ModelplaneError

    try:
        declared = load_cluster(cluster_file).local.name
    except (ModelplaneError, OSError) as exc:
        log.warning("%s: %s; the local node is named after the host", cluster_file, exc)
        declared = None
    return declared or node_name(socket.gethostname())


@dataclass(frozen=True, slots=True)
class SystemOptions:
    """How to run the live system, beyond the settings."""

    host: str = "127.0.0.1"
    port: int = 8000
    """The gateway's port."""
    api_port: int = 8080
    actor: str = "local"
    """Who the audit log names for changes made without a token."""
    evidence: PredictionLogConfig | None = None
    """What the prediction log keeps (``None``: its defaults)."""
    outcome_interval_s: float = 10.0
    """The outcome recorder's cadence: a regression found in labels shows in ``status``
    soon after the labels arrive."""
    node: str | None = None
    """The node the gateway's worker processes run on, as snapshots name it (``None``:
    :func:`local_node_name` of ``$MODELPLANE_HOME/cluster.yaml``)."""
    backend: Literal["local", "ray"] = "local"
    """Where replicas run: ``local``, worker processes of this machine (sandboxed, the
    default); ``ray``, actors on the Ray cluster at ``ray_address``, placed by modelplane."""
    ray_address: str | None = None
    gateways: int = 1
    """Gateway processes on ``host:port`` (``SO_REUSEPORT``): this one and ``gateways - 1``
    children (see :mod:`.gateways`)."""
    oidc: OidcConfig | None = None
    """The issuer whose JWTs predictions may carry; child gateways build their check from
    it (this process's comes from the caller's ``auth``)."""
    attached: bool = False
    """This gateway serves the replicas another process placed on the backend and places
    none itself (a child gateway of ``up --backend ray --gateways N``)."""

    def __post_init__(self) -> None:
        from modelplane.errors import InvalidSpec

        if self.gateways < 1:
            raise InvalidSpec(
                f"--gateways: {self.gateways} is not a number of gateways (1 or more)",
                details=[{"field": "gateways", "problem": "less than 1"}],
            )
        if self.backend not in ("local", "ray"):
            raise InvalidSpec(
                f"--backend: '{self.backend}' is not a backend (local or ray)",
                details=[{"field": "backend", "problem": "not local or ray"}],
            )
        if self.backend == "ray" and not self.ray_address:
            raise InvalidSpec(
                "--ray-address: the ray backend needs the cluster's address (HOST:PORT)",
                details=[{"field": "ray_address", "problem": "missing"}],
            )
        if self.backend == "local" and self.ray_address:
            raise InvalidSpec(
                "--ray-address: given without --backend ray",
                details=[{"field": "ray_address", "problem": "needs --backend ray"}],
            )


def _bound_port(started: Any, asked: int) -> int:
    """The port a started server listens on: what was asked, or the one port 0 got."""
    for listening in getattr(started, "servers", None) or ():
        for sock in listening.sockets:
            return int(sock.getsockname()[1])
    return asked


def _node_reader(backend: ExecutionBackend | None) -> BackendCapacity | None:
    from modelplane.system.jobs import BackendCapacity

    return None if backend is None else BackendCapacity(backend)


def server(
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
    built = uvicorn.Server(config)
    built.lifespan = config.lifespan_class(config)
    return built


class LiveSystem:
    """Every part of the live system, built and wired but not started.

    Build it with :meth:`open`, run it with :meth:`serve` until a stop event, and
    :meth:`close` it (``serve`` leaves the stores open for the caller to close).
    """

    def __init__(
        self,
        settings: Settings,
        options: SystemOptions,
        registry: Registry,
        online_store: OnlineStore,
        auth: ServingAuth,
        backend: ExecutionBackend | None = None,
    ) -> None:
        from modelplane.controlplane.autoscaler import Autoscaler
        from modelplane.controlplane.degrader import Degrader
        from modelplane.controlplane.endpoints import EndpointController
        from modelplane.controlplane.rollouts import RolloutController
        from modelplane.controlplane.slo import SloRecorder
        from modelplane.security.sandbox import probe as probe_sandbox
        from modelplane.system.gateway_views import (
            GatewayConcurrency,
            GatewayEvidence,
            GatewaySlo,
            GatewayTarget,
        )

        self.settings = settings
        self.options = options
        self.registry = registry
        self.online_store = online_store
        self.backend = backend
        # a child gateway on Ray places nothing: it serves the replicas up's gateway placed
        placing = backend is not None and not options.attached
        self.fleet = _fleet(backend, registry, settings) if placing else None
        # the backend's live nodes, read every 2 s for the job queue and the usage sampler
        self.nodes = _node_reader(backend) if placing else None
        self.gateway = self._gateway(auth)
        self.api = self._api(auth)
        self.endpoints = EndpointController(
            registry,
            GatewayTarget(self.gateway),
            settings.home / "cache" / "packages",
            # this machine's workers; a Ray node's are in its labels (`modelplane nodes`)
            sandbox_missing=probe_sandbox().missing() if backend is None else None,
        )
        # more than one gateway: the controllers below read every gateway's evidence, summed
        many = self.gateways = _gateways(self.gateway, settings, options, auth)
        concurrency = (
            GatewayConcurrency(self.gateway) if many is None
            else many.concurrency(shared=backend is not None)
        )  # fmt: skip
        self.degrader = Degrader(registry, concurrency, target=many or self.gateway)
        evidence = many.evidence() if many else GatewayEvidence(self.gateway)
        slo = many.slo() if many else GatewaySlo(self.gateway)
        # Ray's replicas are not this machine's processes, and every gateway shares them:
        # up's own gateway counts them once
        usage = many.usage(registry.engine, settings) if many and backend is None else None
        loops: dict[str, Loop] = {
            "endpoint controller": self.endpoints.run,
            "rollout controller": RolloutController(registry, evidence).run,
            "SLO recorder": SloRecorder(registry.engine, slo).run,
            "usage sampler": self._usage_loop(usage),
            "autoscaler": Autoscaler(registry, concurrency).run,
            "degrader": self.degrader.run,
            "job controller": self._jobs(),
            "outcome recorder": _outcome_recorder(registry.engine, options.outcome_interval_s),
        }
        if self.fleet is not None:
            loops["placement controller"] = self.fleet.run
        if self.nodes is not None:
            loops["node reader"] = self.nodes.run
        self.controllers: tuple[tuple[str, Loop], ...] = tuple(
            (what, loops[what]) for what in CONTROLLERS if what in loops
        )
        shared = many.server() if many else None  # on a port the child gateways share
        self.servers = [
            shared or server(self.gateway, options.host, options.port, lifespan="on"),
            server(self.api, options.host, options.api_port, lifespan="off"),
        ]

    def _usage_loop(self, sampler: UsageSampler | None) -> Loop:
        """The usage sampler; when up places replicas on an execution backend, its nodes are
        the backend's live nodes (the node reader's)."""
        from modelplane.system.usage import usage_sampler

        if sampler is not None:
            return sampler.run
        nodes = self.nodes
        on = usage_sampler(self.registry.engine, self.gateway, self.settings, backend_nodes=nodes)
        if nodes is None:
            return on.run

        async def run(stop: asyncio.Event) -> None:
            await nodes.refresh()  # before the first sample: its intervals name these nodes
            await on.run(stop)

        return run

    def _jobs(self) -> Loop:
        """The job controller: on Ray, shards are Ray tasks admitted against Ray's nodes,
        their packages fetched from the artifact store where a node lacks them (up's
        controller only: a child gateway runs no controllers)."""
        from modelplane.system.jobs import run_jobs

        settings, nodes = self.settings, self.nodes
        return run_jobs(
            self.registry, settings.home, self.degrader, capacity=nodes,
            ray_address=self.options.ray_address,
            artifacts=settings.resolved_artifact_url() if nodes else None,
        )  # fmt: skip

    @classmethod
    def open(
        cls,
        settings: Settings,
        options: SystemOptions,
        auth: Callable[[Engine], ServingAuth],
    ) -> LiveSystem:
        """Open the stores named by ``settings`` and build every part over them; ``auth``
        chooses who may call once the state store is open (tokens live there)."""
        from modelplane.features.stores import open_online_store
        from modelplane.registry.service import open_registry
        from modelplane.security.keys import audit_key_from

        backend = _connect(options, settings)
        registry = open_registry(
            settings.resolved_database_url(),
            settings.resolved_artifact_url(),
            actor=options.actor,
            audit_key=audit_key_from(settings),
        )
        try:
            # One store for both: the API's push writes what the gateway's join reads.
            online_store = open_online_store(settings.resolved_feature_store_url())
            try:
                return cls(
                    settings, options, registry, online_store, auth(registry.engine), backend
                )
            except BaseException:
                online_store.close()
                raise
        except BaseException:
            registry.close()
            raise

    def _gateway(self, auth: ServingAuth) -> Gateway:
        from modelplane.dataplane.gateway import Gateway, GatewayConfig
        from modelplane.observe.outcomes import OutcomeStore
        from modelplane.observe.predlog import PredictionLog, PredictionLogConfig

        engine = self.registry.engine
        node = self.options.node or local_node_name(self.settings.home / "cluster.yaml")
        return Gateway(
            [],
            GatewayConfig(node=node, pools=self._pools()),
            sink=PredictionLog(engine, self.options.evidence or PredictionLogConfig()),
            online_store=self.online_store,
            auth=auth.predict,
            feedback=OutcomeStore(engine),
        )

    def _pools(self) -> PoolFactory | None:
        """Local worker processes (``None``), replicas this process places on the backend, or
        replicas another gateway placed there (``options.attached``)."""
        if self.fleet is not None:
            return self.fleet.pool
        if self.backend is None:
            return None
        from modelplane.system.attached_pool import ReplicaDirectory, attached_pools

        directory: ReplicaDirectory = self.backend  # type: ignore[assignment]
        return attached_pools(directory)

    def _api(self, auth: ServingAuth) -> FastAPI:
        from modelplane.controlplane.api import create_api
        from modelplane.system.jobs import submit_check

        options = self.options
        return create_api(
            self.registry,
            authenticator=auth.api,
            actor=options.actor,
            online_store=self.online_store,
            gateway_url=f"http://{options.host}:{options.port}",
            job_check=submit_check(self.registry, self.settings.home),
        )

    async def serve(
        self, stop: asyncio.Event, *, announce: Callable[[str], None] = log.info
    ) -> None:
        """Start everything, run until ``stop`` is set, then stop it all in order (raises
        :class:`StartupFailed` when a server cannot start)."""
        options = self.options
        try:
            await self._check_backend()
            # Before the gateway listens: endpoints in the store answer 503 (retry) while
            # they start, never 404, and /v2/health/ready waits until each has started or
            # failed.
            await self.endpoints.prime()
            for started in self.servers:
                await started.startup()
                if started.should_exit:
                    raise StartupFailed(f"a server on {options.host} could not start")
            port = _bound_port(self.servers[0], options.port)
            api_port = _bound_port(self.servers[1], options.api_port)
            announce(
                f"gateway  http://{options.host}:{port}"
                "  (Open Inference Protocol v2, records)"
                + (f"  {options.gateways} gateways, SO_REUSEPORT" if self.gateways else "")
            )
            announce(
                f"control  http://{options.host}:{api_port}  (console at /, API docs at /docs)"
            )
            announce(f"state    {self.settings.resolved_database_url()}")
            loops = [asyncio.create_task(s.main_loop()) for s in self.servers]
            many = [self.gateways.run(stop, announce)] if self.gateways else []
            await asyncio.gather(
                *many, *(keep_running(stop, run, what=what) for what, run in self.controllers)
            )
            for running in reversed(self.servers):
                running.should_exit = True
            await asyncio.gather(*loops)
        finally:
            # The API first, the gateway last: its lifespan drains accepted requests.
            for running in reversed(self.servers):
                if running.started:
                    await running.shutdown()
            if self.fleet is not None:
                await self.fleet.close()
            if self.backend is not None:
                await self.backend.close()

    async def _check_backend(self) -> None:
        """Refuse what cannot work across machines before anything starts on them."""
        if self.backend is None:
            return
        from modelplane.errors import InvalidSpec

        nodes = [n for n in await self.backend.nodes() if n.alive]
        url = self.settings.resolved_database_url()
        if len(nodes) > 1 and url.startswith("sqlite"):
            raise InvalidSpec(
                f"the state store is SQLite ({url}), a file on this machine, and the "
                f"{self.backend.kind} cluster has {len(nodes)} nodes: set "
                "MODELPLANE_DATABASE_URL to a PostgreSQL database every node reaches",
                details=[{"field": "database_url", "problem": "SQLite with several nodes"}],
            )
        artifacts = self.settings.resolved_artifact_url()
        if len(nodes) > 1 and "://" not in artifacts:
            log.warning(
                "the artifact store is %s, a folder of this machine: replicas on the other "
                "%d nodes fetch packages from it only where that folder is shared "
                "(MODELPLANE_ARTIFACT_URL=s3://... otherwise)",
                artifacts, len(nodes) - 1,
            )  # fmt: skip
        for line in getattr(self.backend, "exposure", lambda: ())():
            log.warning("the %s cluster is open: %s", self.backend.kind, line)

    def close(self) -> None:
        self.online_store.close()
        self.registry.close()


def _gateways(
    gateway: Gateway, settings: Settings, options: SystemOptions, auth: ServingAuth
) -> GatewayFleet | None:
    if options.gateways == 1:
        return None
    from modelplane.system.gateways import GatewayFleet

    return GatewayFleet(gateway, settings, options, predict_auth=auth.predict is not None)


async def keep_running(stop: asyncio.Event, run: Loop, *, what: str) -> None:
    from modelplane.controlplane.loop import keep_running as restart_on_failure

    await restart_on_failure(stop, run, log=log, what=what)


def _connect(options: SystemOptions, settings: Settings) -> ExecutionBackend | None:
    """The execution backend ``options`` names; ``None`` for local worker processes."""
    if options.backend == "local":
        return None
    from modelplane.errors import MissingExtra

    try:
        from modelplane.backends.ray import RayBackend
    except ImportError as exc:
        raise MissingExtra("ray", "ray") from exc
    assert options.ray_address is not None  # checked by SystemOptions
    # One deployment is one state store: its gateways share replicas, and a second
    # deployment on the same cluster (another store) never attaches to them.
    store = settings.resolved_database_url().encode()
    owner = hashlib.sha256(store).hexdigest()[:16]
    return RayBackend.connect(options.ray_address, owner=owner)


def _fleet(
    backend: ExecutionBackend | None, registry: Registry, settings: Settings
) -> BackendFleet:
    from modelplane.controlplane.why import applied_policy
    from modelplane.store.resources import ResourceStore
    from modelplane.system.backend_pool import BackendFleet

    assert backend is not None
    store = ResourceStore(registry.engine)
    # nodes without the package fetch it from the store every node can reach
    artifacts = settings.resolved_artifact_url()
    return BackendFleet(backend, lambda: applied_policy(store), artifacts=artifacts)


def _outcome_recorder(engine: Engine, interval_s: float) -> Loop:
    from modelplane.controlplane.outcomes import OutcomeRecorder

    recorder = OutcomeRecorder(engine)
    return lambda stop: recorder.run(stop, interval_s=interval_s)


async def run_until_signalled(
    settings: Settings,
    options: SystemOptions,
    auth: Callable[[Engine], ServingAuth],
    *,
    announce: Callable[[str], None] = log.info,
) -> None:
    """Build the live system and serve until SIGTERM or SIGINT, then stop it gracefully."""
    system = LiveSystem.open(settings, options, auth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await system.serve(stop, announce=announce)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        system.close()

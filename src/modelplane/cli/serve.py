"""``modelplane serve``: serve one model in one line.

The model is a registry reference (``fraud:7``, ``fraud@champion``, ``fraud``), fetched and
verified into a cache under the state folder, or a package folder on disk. Without
``--contract`` the endpoint's contract is the package's signature.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelplane.cli.context import CliContext
from modelplane.cli.output import handle_errors
from modelplane.errors import InvalidSpec

if TYPE_CHECKING:
    import uvicorn

    from modelplane.dataplane.endpoint_runtime import ModelSource
    from modelplane.spec.contract import Contract
    from modelplane.spec.endpoint import Batching, Endpoint

__all__ = ["endpoint_for", "register", "resolve_source", "serve"]

DEFAULT_HOST = "127.0.0.1"

LOCAL_ALIAS = "local"
"""The alias a package folder's route is named with (``name@local``)."""


def _cache_dir(cli: CliContext) -> Path:
    return cli.settings.home / "cache" / "packages"


def _fetch(cli: CliContext, ref: str) -> ModelSource:
    """Resolve a registry ref and make sure a verified copy of its package is cached."""
    # Imported here: the registry needs the state store, the data plane its engines.
    from modelplane.cli.context import registry_from
    from modelplane.dataplane.endpoint_runtime import ModelSource
    from modelplane.registry.digest import verify_package

    with registry_from(cli) as registry:
        found = registry.get(ref)
        target = _cache_dir(cli) / found.digest.removeprefix("sha256:")
        if not target.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
            try:
                registry.fetch(found.ref, staging / "pkg")
                # a rename is atomic: a concurrent serve sees the whole package or none
                os.replace(staging / "pkg", target)
            except OSError:
                if not target.is_dir():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    verified = verify_package(target, found.digest)
    return ModelSource(found.ref, target, verified.manifest, verified.digest)


def resolve_source(cli: CliContext, model: str) -> tuple[str, ModelSource]:
    """``(route ref, source)`` for a package folder or a registry reference."""
    from modelplane.dataplane.endpoint_runtime import ModelSource
    from modelplane.registry.digest import verify_package

    path = Path(model)
    if path.is_dir():
        verified = verify_package(path.resolve())
        name = verified.manifest.name
        label = f"{name}:{verified.digest.removeprefix('sha256:')[:12]}"
        source = ModelSource(label, path.resolve(), verified.manifest, verified.digest)
        return f"{name}@{LOCAL_ALIAS}", source
    if path.exists() or "/" in model:
        raise InvalidSpec(f"{model}: not a package folder")
    source = _fetch(cli, model)
    return source.label, source


def endpoint_for(
    route: str,
    source: ModelSource,
    *,
    name: str | None = None,
    contract: Contract | None = None,
    replicas: int = 1,
    batching: Batching | None = None,
) -> Endpoint:
    """A one-route endpoint for ``source``; its contract is the signature unless given."""
    from modelplane.spec.contract import Contract
    from modelplane.spec.endpoint import Batching, Endpoint, Route

    endpoint_name = name or source.manifest.name
    signature = source.manifest.signature
    chosen = contract or Contract(
        name=endpoint_name, inputs=signature.inputs, outputs=signature.outputs
    )
    return Endpoint(
        name=endpoint_name,
        team="default",
        contract=chosen,
        routes=(Route(model=route),),
        replicas=replicas,
        batching=batching or Batching(),
    )


ModelArg = Annotated[
    str, typer.Argument(help="Registry ref (name:version, name@alias, name) or package folder.")
]
NameOpt = Annotated[str | None, typer.Option(help="Endpoint name (default: the model's).")]
HostOpt = Annotated[str, typer.Option(help="Address to listen on (loopback by default).")]
DelayOpt = Annotated[float, typer.Option(min=0.0, help="Longest a row waits for a batch.")]
ContractOpt = Annotated[Path | None, typer.Option(help="Contract YAML (default: the signature).")]


@handle_errors
def serve(
    ctx: typer.Context,
    model: ModelArg,
    name: NameOpt = None,
    host: HostOpt = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Rows per batch at most.")] = 64,
    max_delay_ms: DelayOpt = 2.0,
    contract: ContractOpt = None,
) -> None:
    """Serve one model over Open Inference Protocol v2 and records JSON until SIGTERM."""
    from modelplane.dataplane.endpoint_runtime import EndpointConfig
    from modelplane.dataplane.server import bound_port, serve_endpoints
    from modelplane.spec.contract import Contract
    from modelplane.spec.endpoint import Batching
    from modelplane.spec.io import load_yaml

    cli: CliContext = ctx.obj
    route, source = resolve_source(cli, model)
    endpoint = endpoint_for(
        route,
        source,
        name=name,
        contract=load_yaml(Contract, contract) if contract is not None else None,
        replicas=replicas,
        batching=Batching(max_batch_size=max_batch_size, max_delay_ms=max_delay_ms),
    )

    def announce(server: uvicorn.Server) -> None:
        url = f"http://{host}:{bound_port(server)}"
        typer.echo(f"serving {endpoint.name} ({source.label} {source.digest}) on {url}")
        # the URLs a person pastes: the endpoint is named after the model unless --name says
        typer.echo(f"  records  POST {url}/v1/endpoints/{endpoint.name}:predict")
        typer.echo(f"  v2       POST {url}/v2/models/{endpoint.name}/infer")

    serve_endpoints([EndpointConfig(endpoint, {route: source})], host, port, on_ready=announce)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve)

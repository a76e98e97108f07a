"""The control-plane HTTP API (FastAPI; OpenAPI at ``/docs``): apply, read, delete, audit.

It is a thin edge over the same objects the CLI uses: the registry, the resource store and
the applier. Errors leave as ``{"error": {"code", "message", "details"}}`` with the status
from :data:`modelplane.errors.HTTP_STATUS`.

Every route but ``/healthz`` and the API's description runs behind
:class:`~modelplane.controlplane.limits.ApiGuard`, which names the caller (a token's
principal, or the local operator when the server runs without authentication); each route
then asks :func:`~modelplane.security.scopes.authorize` whether that principal may act on
what it touches, team by team. The audit log records the principal's subject.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelplane import __version__
from modelplane.controlplane.apply import Applier, JobCheck
from modelplane.controlplane.console import register_console
from modelplane.controlplane.evidence import register_evidence
from modelplane.controlplane.featuresets import resolve_feature_set
from modelplane.controlplane.job_routes import register_jobs
from modelplane.controlplane.limits import ApiGuard, ApiLimits
from modelplane.controlplane.rollout_commands import record_command, rollback_traffic
from modelplane.controlplane.rollouts import start_rollout
from modelplane.controlplane.uploads import receive_package
from modelplane.controlplane.usage_routes import register_usage_routes
from modelplane.core.rollout import Command
from modelplane.errors import HTTP_STATUS, InvalidSpec, ModelplaneError, NotFound
from modelplane.features.base import OnlineStore
from modelplane.features.ingest import push
from modelplane.observe.predlog import find_predictions
from modelplane.observe.status import read_status
from modelplane.registry.records import ModelVersion
from modelplane.registry.service import Registry
from modelplane.security.auth import Authenticator
from modelplane.security.scopes import Action, Principal, Scope, authorize
from modelplane.spec.io import parse
from modelplane.spec.rollout import RolloutSpec
from modelplane.store.resources import Resource, ResourceStore

__all__ = ["ApplyRequest", "CommandRequest", "RolloutRequest", "create_api"]


class PushRow(BaseModel):
    key: str | int
    event_time: float | None = None
    """Seconds since the epoch; default: when the request arrived."""
    values: dict[str, Any]


class PushRequest(BaseModel):
    rows: list[PushRow] = Field(min_length=1, max_length=100_000)


class RolloutRequest(BaseModel):
    document: dict[str, Any]
    """A ``Rollout`` document (``endpoint``, ``to``, strategy, steps, gates)."""
    reason: str = ""


class CommandRequest(BaseModel):
    reason: str = ""


class ApplyRequest(BaseModel):
    documents: list[dict[str, Any]] = Field(min_length=1)
    reason: str = ""
    allow_breaking: bool = False


def _version(v: ModelVersion) -> dict[str, Any]:
    return {
        "ref": v.ref,
        "name": v.name,
        "version": v.version,
        "digest": v.digest,
        "runtime": v.runtime.value,
        "aliases": list(v.aliases),
        "archived": v.archived,
        "created_at": v.created_at.isoformat(),
        "created_by": v.created_by,
    }


def _resource(r: Resource) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "name": r.name,
        "generation": r.generation,
        "spec": r.spec,
        "status": r.status,
        "updated_at": r.updated_at.isoformat(),
    }


async def _modelplane_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelplaneError)
    return JSONResponse({"error": exc.to_dict()}, status_code=HTTP_STATUS.get(exc.code, 500))


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


Caller = Annotated[Principal, Depends(_principal)]

_WRITE_SCOPE = {"Endpoint": Scope.DEPLOY, "FeatureSet": Scope.FEATURES_WRITE, "Job": Scope.JOBS}
# Kinds that hang off an endpoint (named after it) are written with the endpoint's rights.
_ENDPOINT_PARTS = frozenset({"Rollout", "SLOReport"})


class _Owners:
    """Answers "which team owns this?" from the stored resources."""

    def __init__(self, resources: ResourceStore) -> None:
        self.resources = resources

    def endpoint_team(self, name: str) -> str | None:
        try:
            return _team_of(self.resources.get("Endpoint", name).spec)
        except NotFound:
            return None

    def feature_set_teams(self, name: str) -> list[str | None]:
        return [
            _team_of(r.spec)
            for r in self.resources.list("FeatureSet")
            if r.spec.get("name") == name
        ]

    def apply_action(self, document: Mapping[str, Any]) -> Action:
        """What applying ``document`` would do: its scope, and the teams of the new spec and
        of what it replaces. A team that is not a name is left to the applier to refuse."""
        kind, name = document.get("kind"), document.get("name")
        what = f"apply {kind}/{name}"
        scope = _WRITE_SCOPE.get(str(kind))
        if scope is None:
            return Action(Scope.ADMIN, what)
        new_team = document.get("team")
        teams: list[str | None] = [new_team] if isinstance(new_team, str) else []
        if isinstance(name, str):
            if kind == "Endpoint":
                if self._exists("Endpoint", name):
                    teams.append(self.endpoint_team(name))
            elif kind == "Job":
                if self._exists("Job", name):
                    teams.append(_team_of(self.resources.get("Job", name).spec))
            else:
                teams += self.feature_set_teams(name)
        return Action(scope, what, tuple(teams))

    def delete_action(self, kind: str, name: str) -> Action:
        what = f"delete {kind}/{name}"
        if kind in _ENDPOINT_PARTS:
            return Action(Scope.DEPLOY, what, (self.endpoint_team(name),))
        scope = _WRITE_SCOPE.get(kind)
        if scope is None:
            return Action(Scope.ADMIN, what)
        return Action(scope, what, (_team_of(self.resources.get(kind, name).spec),))

    def _exists(self, kind: str, name: str) -> bool:
        try:
            self.resources.get(kind, name)
        except NotFound:
            return False
        return True


def _team_of(spec: Mapping[str, Any]) -> str | None:
    team = spec.get("team")
    return team if isinstance(team, str) else None


def create_api(
    registry: Registry,
    *,
    authenticator: Authenticator | None = None,
    actor: str = "local",
    online_store: OnlineStore | None = None,
    limits: ApiLimits | None = None,
    gateway_url: str | None = None,
    job_check: JobCheck | None = None,
) -> FastAPI:
    """The API over ``registry`` (and its store).

    With ``authenticator``, every call but ``/healthz`` needs a token; without one, every
    caller acts as the local operator ``actor`` with every right (for a server on loopback
    that only its owner reaches, and for tests). ``online_store`` enables
    ``POST /v1/features/{set}:push``. ``gateway_url`` is where the console at ``/`` links
    for the gateway's metrics. ``job_check`` checks a submitted job's inputs (the
    composition's planner) before it is recorded.
    """
    resources = ResourceStore(registry.engine)
    owners = _Owners(resources)
    # /docs comes from register_console: FastAPI's own loads Swagger UI from a CDN.
    api = register_console(
        FastAPI(
            title="modelplane control plane", version=__version__, docs_url=None, redoc_url=None
        ),
        registry.engine,
        gateway_url=gateway_url,
    )
    api.add_exception_handler(ModelplaneError, _modelplane_error)
    api.add_middleware(
        ApiGuard, limits=limits or ApiLimits(), authenticator=authenticator, actor=actor
    )

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    _resource_routes(api, registry, resources, owners, job_check)
    register_jobs(api, registry)
    _registry_routes(api, registry)
    _rollout_routes(api, registry, owners)
    _data_routes(api, registry, resources, owners, online_store)
    register_evidence(api, registry)
    register_usage_routes(api, registry.engine)
    return api


def _read(who: Principal, what: str) -> None:
    authorize(who, Action(Scope.READ, what))


def _resource_routes(
    api: FastAPI,
    registry: Registry,
    resources: ResourceStore,
    owners: _Owners,
    job_check: JobCheck | None = None,
) -> None:
    @api.post("/v1/apply")
    def apply(body: ApplyRequest, who: Caller) -> list[dict[str, Any]]:
        for document in body.documents:
            authorize(who, owners.apply_action(document))
        applier = Applier(registry, resources, actor=who.subject, job_check=job_check)
        results = applier.apply_all(
            body.documents, reason=body.reason, allow_breaking=body.allow_breaking
        )
        return [
            {
                "kind": r.kind,
                "name": r.name,
                "outcome": r.outcome,
                "generation": r.generation,
                "resolved": dict(r.resolved),
                "warnings": [w.to_detail() for w in r.warnings],
            }
            for r in results
        ]

    @api.get("/v1/resources/{kind}")
    def list_resources(kind: str, who: Caller) -> list[dict[str, Any]]:
        _read(who, f"list {kind}")
        return [_resource(r) for r in resources.list(kind)]

    @api.get("/v1/resources/{kind}/{name}")
    def get_resource(kind: str, name: str, who: Caller) -> dict[str, Any]:
        _read(who, f"read {kind}/{name}")
        return _resource(resources.get(kind, name))

    @api.delete("/v1/resources/{kind}/{name}")
    def delete_resource(kind: str, name: str, who: Caller, reason: str = "") -> dict[str, str]:
        try:
            action = owners.delete_action(kind, name)
        except NotFound:
            # Only a caller who could delete it learns that it is not there.
            authorize(who, Action(_WRITE_SCOPE.get(kind, Scope.ADMIN), f"delete {kind}/{name}"))
            raise
        authorize(who, action)
        resources.delete(kind, name, actor=who.subject, reason=reason)
        return {"deleted": f"{kind}/{name}"}


def _registry_routes(api: FastAPI, registry: Registry) -> None:
    @api.post("/v1/models:push")
    async def push_model(
        request: Request, who: Caller, reason: str = "", team: str | None = None
    ) -> dict[str, Any]:
        """Register a package (the ``.tar`` of ``modelplane package --tar``, as the body).
        A new model becomes the pusher's team's (admin may name one); another team's model
        is refused before anything is stored."""
        found = await receive_package(request.stream(), registry, who, team=team, reason=reason)
        return _version(found)

    @api.get("/v1/models")
    def models(
        who: Caller, search: str | None = None, include_archived: bool = False
    ) -> list[dict[str, Any]]:
        _read(who, "list models")
        return [
            {
                "name": m.name,
                "created_at": m.created_at.isoformat(),
                "latest_version": m.latest_version,
                "version_count": m.version_count,
                "aliases": dict(m.aliases),
                "archived": m.archived,
            }
            for m in registry.list_models(search, include_archived=include_archived)
        ]

    @api.get("/v1/models/{name}/versions")
    def versions(name: str, who: Caller, include_archived: bool = False) -> list[dict[str, Any]]:
        _read(who, f"list versions of {name}")
        return [
            _version(v) for v in registry.list_versions(name, include_archived=include_archived)
        ]

    @api.get("/v1/versions/{ref}")
    def version(ref: str, who: Caller) -> dict[str, Any]:
        _read(who, f"read {ref}")
        found = registry.get(ref)
        return {**_version(found), "manifest": found.manifest.model_dump(mode="json")}

    @api.get("/v1/status")
    def status(who: Caller) -> dict[str, Any]:
        """What ``modelplane status`` shows: every endpoint, as served, and what the
        serving gateway's sandbox cannot take away."""
        _read(who, "read the status")
        url = registry.engine.url.render_as_string(hide_password=False)
        return read_status(url)

    @api.get("/v1/whoami")
    def whoami(who: Caller) -> dict[str, Any]:
        """Who the token speaks for: any valid token may ask."""
        return {
            "subject": who.subject,
            "team": who.team,
            "scopes": sorted(who.scopes),
            "endpoints": None if who.endpoints is None else sorted(who.endpoints),
            "token_id": who.token_id,
        }

    @api.get("/v1/audit")
    def audit_log(
        who: Caller,
        limit: int = 100,
        subject: str | None = None,
        action: str | None = None,
        actor: str | None = None,
    ) -> list[dict[str, Any]]:
        _read(who, "read the audit log")
        found = registry.audit_events(
            subject=subject, action=action, actor=actor, limit=min(limit, 1000)
        )
        return [
            {
                "seq": e.seq,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "reason": e.reason,
                "before": e.before,
                "after": e.after,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
                "mac": e.mac,
            }
            for e in found
        ]


def _rollout_routes(api: FastAPI, registry: Registry, owners: _Owners) -> None:
    @api.post("/v1/rollouts")
    def start(body: RolloutRequest, who: Caller) -> dict[str, Any]:
        """Start a rollout: the endpoint's team (or admin) with ``deploy``."""
        spec = parse(RolloutSpec, {**body.document, "kind": "Rollout"}, what="Rollout")
        what = f"roll out Endpoint/{spec.endpoint}"
        authorize(who, Action(Scope.DEPLOY, what, (owners.endpoint_team(spec.endpoint),)))
        resource = start_rollout(
            registry, spec, actor=who.subject, now=time.time(), reason=body.reason
        )
        return {"name": resource.name, "generation": resource.generation, **resource.spec}

    @api.post("/v1/rollouts/{endpoint}:{command}")
    def rollout_command(
        endpoint: str, command: str, body: CommandRequest, who: Caller
    ) -> dict[str, Any]:
        """``pause``, ``resume``, ``promote`` or ``rollback`` a rollout (a rollback also puts
        all traffic on stable at once), as ``modelplane rollback`` does."""
        what = f"{command} the rollout of Endpoint/{endpoint}"
        authorize(who, Action(Scope.DEPLOY, what, (owners.endpoint_team(endpoint),)))
        try:
            cmd = Command(command)
        except ValueError:
            known = ", ".join(c.value for c in Command)
            raise InvalidSpec(
                f"'{command}' is not a rollout command ({known})",
                details=[{"field": "command", "problem": f"expected one of {known}"}],
            ) from None
        engine, now = registry.engine, time.time()
        done = record_command(engine, endpoint, cmd, actor=who.subject, now=now, reason=body.reason)
        moved = cmd is Command.ROLLBACK and rollback_traffic(
            engine, endpoint, actor=who.subject, reason=body.reason
        )
        return {
            "endpoint": endpoint,
            "command": cmd.value,
            "phase": done.state.phase.value,
            "changed": done.changed,
            "moved": moved,
        }


def _data_routes(
    api: FastAPI,
    registry: Registry,
    resources: ResourceStore,
    owners: _Owners,
    online_store: OnlineStore | None,
) -> None:
    """What carries callers' data: the prediction log, and feature values."""

    @api.get("/v1/predictions/{request_id}")
    def predictions(request_id: str, who: Caller) -> list[dict[str, Any]]:
        """The kept prediction-log rows of a request: callers' data, so only the team that
        owns the endpoint (or admin) reads them."""
        _read(who, f"read the prediction log of {request_id}")
        rows = find_predictions(registry.engine, request_id)
        for endpoint in sorted({str(row["endpoint"]) for row in rows}):
            what = f"read the prediction log of {endpoint}"
            authorize(who, Action(Scope.READ, what, (owners.endpoint_team(endpoint),)))
        return [{k: _plain(v) for k, v in row.items()} for row in rows]

    @api.post("/v1/features/{ref}:push")
    def push_features(ref: str, body: PushRequest, who: Caller) -> dict[str, Any]:
        authorize(who, Action(Scope.FEATURES_WRITE, f"push features to {ref}"))
        if online_store is None:
            raise NotFound("this server has no online feature store")
        featureset = resolve_feature_set(resources, ref)
        what = f"push features to {featureset.ref}"
        authorize(who, Action(Scope.FEATURES_WRITE, what, (featureset.team,)))
        now = time.time()
        rows = [(r.key, now if r.event_time is None else r.event_time, r.values) for r in body.rows]
        result = push(online_store, featureset, rows)
        return {
            "feature_set": featureset.ref,
            "written": result.written,
            "skipped_older": result.skipped_older,
        }


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value

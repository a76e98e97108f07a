"""The control-plane HTTP API (FastAPI; OpenAPI at ``/docs``): apply, read, delete, audit.

It is a thin edge over the same objects the CLI uses: the registry, the resource store and
the applier. Errors leave as ``{"error": {"code", "message", "details"}}`` with the status
from :data:`modelplane.errors.HTTP_STATUS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelplane import __version__
from modelplane.controlplane.apply import Applier
from modelplane.controlplane.featuresets import resolve_feature_set
from modelplane.errors import HTTP_STATUS, ModelplaneError, NotFound
from modelplane.features.base import OnlineStore
from modelplane.features.ingest import push
from modelplane.registry.records import ModelVersion
from modelplane.registry.service import Registry
from modelplane.store.resources import Resource, ResourceStore

__all__ = ["ApplyRequest", "create_api"]


class PushRow(BaseModel):
    key: str | int
    event_time: float | None = None
    """Seconds since the epoch; default: when the request arrived."""
    values: dict[str, Any]


class PushRequest(BaseModel):
    rows: list[PushRow] = Field(min_length=1, max_length=100_000)


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


def create_api(
    registry: Registry,
    *,
    actor_of: Callable[[Request], str],
    online_store: OnlineStore | None = None,
) -> FastAPI:
    """The API over ``registry`` (and its store); ``actor_of`` names who is calling.

    ``online_store`` enables ``POST /v1/features/{set}:push``.
    """
    resources = ResourceStore(registry.engine)
    api = FastAPI(title="modelplane control plane", version=__version__)
    api.add_exception_handler(ModelplaneError, _modelplane_error)

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @api.post("/v1/apply")
    def apply(body: ApplyRequest, request: Request) -> list[dict[str, Any]]:
        applier = Applier(registry, resources, actor=actor_of(request))
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
    def list_resources(kind: str) -> list[dict[str, Any]]:
        return [_resource(r) for r in resources.list(kind)]

    @api.get("/v1/resources/{kind}/{name}")
    def get_resource(kind: str, name: str) -> dict[str, Any]:
        return _resource(resources.get(kind, name))

    @api.delete("/v1/resources/{kind}/{name}")
    def delete_resource(kind: str, name: str, request: Request, reason: str = "") -> dict[str, str]:
        resources.delete(kind, name, actor=actor_of(request), reason=reason)
        return {"deleted": f"{kind}/{name}"}

    @api.get("/v1/models")
    def models(search: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "name": m.name,
                "latest_version": m.latest_version,
                "version_count": m.version_count,
                "aliases": dict(m.aliases),
                "archived": m.archived,
            }
            for m in registry.list_models(search)
        ]

    @api.get("/v1/models/{name}/versions")
    def versions(name: str) -> list[dict[str, Any]]:
        return [_version(v) for v in registry.list_versions(name)]

    @api.get("/v1/versions/{ref}")
    def version(ref: str) -> dict[str, Any]:
        found = registry.get(ref)
        return {**_version(found), "manifest": found.manifest.model_dump(mode="json")}

    @api.get("/v1/audit")
    def audit_log(limit: int = 100, subject: str | None = None) -> list[dict[str, Any]]:
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
            }
            for e in registry.audit_events(subject=subject, limit=min(limit, 1000))
        ]

    @api.post("/v1/features/{ref}:push")
    def push_features(ref: str, body: PushRequest) -> dict[str, Any]:
        if online_store is None:
            raise NotFound("this server has no online feature store")
        featureset = resolve_feature_set(resources, ref)
        now = time.time()
        rows = [(r.key, now if r.event_time is None else r.event_time, r.values) for r in body.rows]
        result = push(online_store, featureset, rows)
        return {
            "feature_set": featureset.ref,
            "written": result.written,
            "skipped_older": result.skipped_older,
        }

    return api

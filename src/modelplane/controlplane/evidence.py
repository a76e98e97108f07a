"""The evidence pack over HTTP: ``GET /v1/versions/{ref}/evidence`` (the sealed JSON) and
``GET /v1/versions/{ref}/evidence.html`` (the self-contained page), read-only.

The pack holds request ids of fallbacks taken from the prediction log (callers' data), so,
like ``/v1/predictions``, only the model's team (or admin) reads it. Both forms are built
from one read of the store per call; the page carries the same JSON it shows.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse

from modelplane.observe.evidence_pack import build_pack, pack_stem, parse_version_ref
from modelplane.observe.evidence_page import render_page
from modelplane.registry.service import Registry
from modelplane.security.scopes import Action, Principal, Scope, authorize
from modelplane.security.signing import Signature, signature_valid

__all__ = ["check_signature", "evidence_for", "register_evidence"]


def check_signature(key_id: str, public_key: str, signature: str, name: str, digest: str) -> bool:
    """:data:`~modelplane.observe.evidence_pack.SignatureCheck` by ed25519 verification."""
    return signature_valid(Signature(key_id, public_key, signature), name, digest)


def evidence_for(registry: Registry, ref: str, **kwargs: Any) -> dict[str, Any]:
    """The sealed pack of ``ref`` from ``registry``'s store, signatures checked, as of now."""
    now = datetime.fromtimestamp(time.time(), UTC)
    return build_pack(registry.engine, ref, now=now, signature_check=check_signature, **kwargs)


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def register_evidence(api: FastAPI, registry: Registry) -> None:
    """Add the two evidence routes to ``api``."""

    def allowed(who: Principal, ref: str) -> None:
        authorize(who, Action(Scope.READ, f"read the evidence of {ref}"))
        name, _, _ = parse_version_ref(ref)
        team = registry.model_team(name)
        authorize(who, Action(Scope.READ, f"read the evidence of {ref}", (team,)))

    @api.get("/v1/versions/{ref}/evidence")
    def evidence(ref: str, who: Annotated[Principal, Depends(_principal)]) -> dict[str, Any]:
        """The evidence pack of a model version (``name:version`` or ``name@alias``): what
        shipped, every rollout decision, SLOs, incidents, the audit chain's verification;
        sealed with a SHA-256 digest over its canonical JSON."""
        allowed(who, ref)
        return evidence_for(registry, ref)

    @api.get("/v1/versions/{ref}/evidence.html", response_class=HTMLResponse)
    def evidence_page(ref: str, who: Annotated[Principal, Depends(_principal)]) -> HTMLResponse:
        """The evidence pack as one self-contained HTML page (nothing to fetch)."""
        allowed(who, ref)
        pack = evidence_for(registry, ref)
        disposition = f'inline; filename="{pack_stem(pack["subject"])}.html"'
        return HTMLResponse(render_page(pack), headers={"content-disposition": disposition})

"""A package pushed over the control API: a ``.tar`` streamed to disk, then registered.

The body goes to a temporary file chunk by chunk (the guard's upload limit bounds it), is
unpacked by :func:`~modelplane.registry.archive.import_tar` (plain files below the folder
only, every byte checked against the manifest), and the model's owner is checked before
anything is stored: a push to another team's model stores no artifact and records nothing.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from modelplane.errors import Forbidden, InvalidSpec, NotFound
from modelplane.registry.archive import import_tar
from modelplane.registry.records import ModelVersion
from modelplane.registry.service import Registry
from modelplane.security.scopes import Action, Principal, Scope, authorize

__all__ = ["receive_package"]


async def receive_package(
    chunks: AsyncIterator[bytes],
    registry: Registry,
    who: Principal,
    *,
    team: str | None,
    reason: str,
) -> ModelVersion:
    """Register the package tar in ``chunks`` as ``who``; ``team`` (admin only) names the
    team a new model gets, others push for their own team."""
    authorize(who, Action(Scope.DEPLOY, "push a model"))
    if team is not None and not who.is_admin and team != who.team:
        raise Forbidden(f"{who.subject} (team {who.team}) may not push for team '{team}'")
    acting = team if who.is_admin else who.team
    with tempfile.TemporaryDirectory(prefix="modelplane-upload-") as tmp:
        tar = Path(tmp) / "package.tar"
        with tar.open("wb") as out:
            async for chunk in chunks:
                out.write(chunk)
        return await run_in_threadpool(_register, registry, who, tar, acting, reason)


def _register(
    registry: Registry, who: Principal, tar: Path, team: str | None, reason: str
) -> ModelVersion:
    folder = tar.with_name("package")
    try:
        name = import_tar(tar, folder).manifest.name
    except tarfile.TarError as exc:
        raise InvalidSpec(
            f"the body is not a package tar ({exc})",
            details=[{"field": "body", "problem": "expected the .tar of modelplane package"}],
        ) from None
    try:
        owner = registry.model_team(name)
    except NotFound:
        owner = team  # a new model: it becomes the pusher's team's
    authorize(who, Action(Scope.DEPLOY, f"push to model '{name}'", (owner,)))
    return registry.push(folder, actor=who.subject, reason=reason, team=team)

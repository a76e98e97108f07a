"""The model a job runs: its ref resolved and pinned, its package fetched and verified.

Shards load the package from a local folder named by its digest, fetched once per node
and verified against the digest again in every shard before any model code runs.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from modelplane.errors import IntegrityError, NotFound
from modelplane.registry.digest import verify_package
from modelplane.registry.service import Registry
from modelplane.spec.manifest import Manifest

__all__ = ["JobModel", "fetch_package", "resolve_model"]

_fetch_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True, slots=True)
class JobModel:
    """A resolved model version: what a :class:`~modelplane.core.jobs.ShardTask` carries."""

    ref: str
    """The pinned ``name:version``."""
    digest: str
    manifest: Manifest


def resolve_model(registry: Registry, ref: str, *, field: str = "work.model") -> JobModel:
    """``name:version`` or ``name@alias`` to a version; a missing one names ``field``."""
    try:
        version = registry.get(ref)
    except NotFound as exc:
        raise NotFound(
            f"{field}: {exc} (the job's model '{ref}' must be a registered version or alias)",
            details=[{"field": field, "problem": str(exc), "value": ref}],
        ) from None
    return JobModel(version.ref, version.digest, version.manifest)


def fetch_package(registry: Registry, model: JobModel, cache_dir: Path) -> Path:
    """The package folder of ``model`` under ``cache_dir``, fetched once and verified."""
    folder = cache_dir / model.digest.removeprefix("sha256:")
    with _locks_guard:
        lock = _fetch_locks.setdefault(model.digest, threading.Lock())
    with lock:
        if folder.is_dir():
            try:
                verify_package(folder, model.digest)  # type: ignore[arg-type]
                return folder
            except (IntegrityError, OSError):
                shutil.rmtree(folder)
        staging = folder.with_name(folder.name + ".partial")
        if staging.exists():
            shutil.rmtree(staging)
        cache_dir.mkdir(parents=True, exist_ok=True)
        registry.fetch(model.ref, staging)
        staging.rename(folder)
    return folder

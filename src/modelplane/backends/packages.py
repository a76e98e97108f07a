"""A package on the node that runs a replica: fetched from the artifact store when the node
lacks it.

The gateway's machine resolves each model version into its package cache (a folder named
after the package's digest). A replica placed on another node finds no such folder there; it
fetches the package from the artifact store into the same path before its model process
starts (outside the sandbox, which allows neither the network nor writes there). The copy is
verified against the digest as it lands, and the loader verifies it again before loading.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from modelplane.registry.service import verify_digest
from modelplane.store.artifacts import open_artifact_store
from modelplane.types import Digest

__all__ = ["ensure_package"]


def ensure_package(folder: str, digest: str, artifacts: str) -> bool:
    """Make ``folder`` hold the package ``digest``, fetched from ``artifacts`` when it is not
    there; True when it was fetched. Replicas on one node may race: each fetches into a
    folder of its own and the first rename wins."""
    target = Path(folder)
    if target.is_dir():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    store = open_artifact_store(artifacts, verify=verify_digest)
    store.fetch(Digest(digest), staging)
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    return True

"""What a CLI command needs from the environment: settings and an open registry."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelplane.settings import Settings

if TYPE_CHECKING:
    from modelplane.registry.service import Registry

__all__ = ["CliContext", "registry_from"]


@dataclass(frozen=True, slots=True)
class CliContext:
    settings: Settings

    @property
    def actor(self) -> str:
        return self.settings.actor or getpass.getuser()


@contextmanager
def registry_from(ctx: CliContext) -> Iterator[Registry]:
    # Imported here: the store pulls in SQLAlchemy, which commands like --version never need.
    from modelplane.registry.service import open_registry

    registry = open_registry(
        ctx.settings.resolved_database_url(),
        ctx.settings.resolved_artifact_url(),
        actor=ctx.actor,
    )
    try:
        yield registry
    finally:
        registry.close()

"""What a CLI command needs from the environment: settings and an open registry."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelplane.cli.remote import RemoteConfig
    from modelplane.registry.service import Registry
    from modelplane.settings import Settings

__all__ = ["CliContext", "registry_from"]


class CliContext:
    """Per-invocation context; settings are read on first use (pydantic-settings is slow to
    import, and ``--help`` or ``--version`` never need them)."""

    def __init__(self, home: Path | None = None, *, settings: Settings | None = None) -> None:
        self.home = home
        if settings is not None:
            self.__dict__["settings"] = settings  # what cached_property would have stored

    @cached_property
    def settings(self) -> Settings:
        from modelplane.settings import Settings

        return Settings() if self.home is None else Settings(home=self.home)

    @property
    def actor(self) -> str:
        return self.settings.actor or getpass.getuser()

    @property
    def token_path(self) -> Path:
        """Where ``up`` keeps the local operator's admin token (mode 0600)."""
        return self.settings.home / "token"

    @cached_property
    def remote(self) -> RemoteConfig | None:
        """The control API that ``modelplane login`` chose, if any."""
        from modelplane.cli.remote import read_remote

        return read_remote(self.settings.home)

    @property
    def token(self) -> str | None:
        """The token this CLI sends to the control API: the local operator's, if kept."""
        from modelplane.security.tokens import read_token_file

        return read_token_file(self.token_path)


@contextmanager
def registry_from(ctx: CliContext) -> Iterator[Registry]:
    if ctx.remote is not None:
        from modelplane.cli.remote import RemoteUnsupported

        # A local database is not the server's: reading it would answer the wrong question.
        raise RemoteUnsupported(
            f"this command does not go through the control API ({ctx.remote.url}) yet; run it"
            " where the state store is, or 'modelplane logout' to use the local one"
        )
    # Imported here: the store pulls in SQLAlchemy, which commands like --version never need.
    from modelplane.registry.service import open_registry
    from modelplane.security.keys import audit_key_from

    registry = open_registry(
        ctx.settings.resolved_database_url(),
        ctx.settings.resolved_artifact_url(),
        actor=ctx.actor,
        audit_key=audit_key_from(ctx.settings),
    )
    try:
        yield registry
    finally:
        registry.close()

"""Settings, read once by entry points (``MODELPLANE_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Where modelplane keeps its state and how it reaches its engines."""

    model_config = SettingsConfigDict(env_prefix="MODELPLANE_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".modelplane")
    """Folder for the embedded state store and artifacts."""

    database_url: str | None = None
    """SQLAlchemy URL of the state store; default: SQLite (WAL) at ``home/state.db``."""

    artifact_url: str | None = None
    """fsspec URL of the artifact store; default: the folder ``home/artifacts``."""

    feature_store_url: str | None = None
    """Online feature store: ``sqlite:///...`` (default: ``home/features.db``) or ``redis://``."""

    actor: str | None = None
    """Who is acting, recorded in the audit log; default: the OS user."""

    audit_key: SecretStr | None = None
    """Secret (16+ bytes) that keys the audit log's MACs and anchors; default: the file
    ``home/audit.key``, created with mode 0600 on first use. Every process writing the same
    state store needs the same key, so set this where they do not share a home."""

    usage_sample_s: float = Field(default=5.0, gt=0)
    """How often ``up`` reads each serving replica's CPU, memory and GPU use."""

    usage_flush_s: float = Field(default=60.0, gt=0)
    """How often ``up`` records the readings as usage intervals (at least one sample)."""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'state.db'}"

    def resolved_feature_store_url(self) -> str:
        if self.feature_store_url:
            return self.feature_store_url
        return f"sqlite:///{self.home / 'features.db'}"

    def resolved_artifact_url(self) -> str:
        if self.artifact_url:
            return self.artifact_url
        return str(self.home / "artifacts")

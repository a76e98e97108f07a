from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.settings import Settings


def test_defaults_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path))
    monkeypatch.delenv("MODELPLANE_DATABASE_URL", raising=False)
    monkeypatch.delenv("MODELPLANE_ARTIFACT_URL", raising=False)
    settings = Settings()
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path}/state.db"
    assert settings.resolved_artifact_url() == str(tmp_path / "artifacts")


def test_engines_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLANE_DATABASE_URL", "postgresql+psycopg://pg@127.0.0.1/mp")
    monkeypatch.setenv("MODELPLANE_ARTIFACT_URL", "memory://artifacts")
    settings = Settings()
    assert settings.resolved_database_url() == "postgresql+psycopg://pg@127.0.0.1/mp"
    assert settings.resolved_artifact_url() == "memory://artifacts"

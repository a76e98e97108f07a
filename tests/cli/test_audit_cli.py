"""``modelplane audit verify|anchor`` as a user runs them, and a forger caught in between."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from modelplane.cli.main import app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELPLANE_ACTOR", "alice")
    monkeypatch.delenv("MODELPLANE_AUDIT_KEY", raising=False)
    monkeypatch.delenv("MODELPLANE_DATABASE_URL", raising=False)
    return tmp_path / "home"


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def change(n: int) -> None:
    """One audited change through the CLI: a policy applied (no model needed)."""
    Path("policy.yaml").write_text(f"kind: Policy\nteams:\n  - name: team{n}\n")
    run("apply", "-f", "policy.yaml")


def test_anchor_then_a_dropped_tail_is_named(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for n in range(3):
        change(n)
    assert stat.S_IMODE((home / "audit.key").stat().st_mode) == 0o600
    anchors = tmp_path / "elsewhere" / "anchors.jsonl"
    assert "anchored seq 3" in run("audit", "anchor", "--to", str(anchors))
    out = json.loads(run("audit", "verify", "--anchor", str(anchors), "--json"))
    assert (out["events"], out["unkeyed"], out["anchors"]) == (3, 0, 1)

    # The forger drops the last event and moves the head back: the chain alone is whole.
    engine = create_engine(f"sqlite:///{home / 'state.db'}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 3"))
        second = "(SELECT hash FROM audit_events WHERE seq = 2)"
        conn.execute(text(f"UPDATE audit_head SET seq = 2, hash = {second}"))
    engine.dispose()
    assert "intact" in run("audit", "verify")
    out = run("audit", "verify", "--anchor", str(anchors), code=4)
    assert "seq 3" in out
    assert "dropped tail" in out
    # Nor will it anchor the shortened chain.
    assert "seq 3" in run("audit", "anchor", "--to", str(anchors), code=4)


def test_the_default_anchor_file_is_checked_once_it_exists(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    change(0)
    assert "no anchors checked" in run("audit", "verify")
    run("audit", "anchor")
    assert (home / "audit-anchors.jsonl").is_file()
    change(1)
    assert "consistent with 1 anchor in" in run("audit", "verify")
    assert "anchored seq 2" in run("audit", "anchor")
    out = json.loads(run("audit", "verify", "--json"))
    assert (out["events"], out["anchors"]) == (2, 2)

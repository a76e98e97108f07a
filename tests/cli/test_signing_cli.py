"""``keys create``, ``push --sign``, ``sign``, ``verify`` and a policy that trusts a key,
as a user runs them: the story of a pickled model that may only serve once signed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.registry.build import package

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(120)

ENDPOINT = """
kind: Endpoint
name: risky-score
team: risk
contract:
  name: risky-score
  inputs: [{name: amount, dtype: float64}, {name: age, dtype: float64}]
  outputs: [{name: label, dtype: int64}]
routes: [{model: risky:1}]
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELPLANE_ACTOR", "alice")
    monkeypatch.delenv("MODELPLANE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def pickled_package(tmp_path: Path) -> Path:
    """A joblib (pickle) package, built with --trust-pickle: it runs code when loaded."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(40, 2)), columns=["amount", "age"])
    model = LogisticRegression().fit(frame, (frame["amount"] > 0).astype(int))
    built = package(
        model,
        name="risky",
        output_dir=tmp_path / "risky.mpkg",
        format="joblib",
        trust_pickle=True,
        sample_input=frame.head(),
    )
    return built.path


def test_a_pickle_serves_only_once_a_trusted_code_key_signs(home: Path, tmp_path: Path) -> None:
    created = json.loads(run("keys", "create", "build-bot", "--json"))
    assert stat.S_IMODE(Path(created["private"]).stat().st_mode) == 0o600
    assert created["public"] == str(home / "keys" / "build-bot.pub")
    json.loads(run("keys", "create", "someone", "--json"))
    run("keys", "create", "build-bot", code=7)  # never overwritten

    pushed = json.loads(run("push", str(pickled_package(tmp_path)), "--sign", "someone", "--json"))
    assert pushed["ref"] == "risky:1"
    Path("endpoint.yaml").write_text(ENDPOINT)
    refused = run("apply", "-f", "endpoint.yaml", code=5)
    assert "routes[0].model" in refused
    assert "trusted_pickle" in refused

    Path("policy.yaml").write_text(
        "kind: Policy\ntrusted_keys:\n"
        f"  - {{name: build-bot, public_key: '{created['public_key']}', trusted_for: [code]}}\n"
    )
    run("apply", "-f", "policy.yaml")
    assert "untrusted" in run("apply", "-f", "endpoint.yaml", code=5)
    assert f"with key {created['key_id']}" in run("sign", "risky:1", "--key", "build-bot")
    assert "created" in run("apply", "-f", "endpoint.yaml")

    shown = run("verify", "risky:1")
    assert f"signed by alice with key {created['key_id']} (trusted as 'build-bot' for code)" in (
        shown.replace("\n", " ")
    )
    assert "not trusted by the policy" in shown
    signatures = json.loads(run("verify", "risky:1", "--json"))["signatures"]
    assert [s["trusted_as"] for s in signatures] == [None, "build-bot"]
    events = json.loads(run("audit", "log", "--action", "model.sign", "--json"))
    assert len(events) == 2


def test_verify_names_a_forged_signature(home: Path, tmp_path: Path) -> None:
    run("keys", "create", "build-bot")
    run("push", str(pickled_package(tmp_path)), "--sign", "build-bot")
    engine = create_engine(f"sqlite:///{home / 'state.db'}")
    with engine.begin() as conn:
        (signature,) = conn.execute(text("SELECT signature FROM version_signatures")).one()
        forged = ("B" if signature[0] == "A" else "A") + signature[1:]
        conn.execute(text("UPDATE version_signatures SET signature = :s"), {"s": forged})
    engine.dispose()
    out = run("verify", "risky:1", code=4)
    assert "does not verify" in out

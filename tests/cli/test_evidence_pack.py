"""``modelplane evidence MODEL:VERSION`` against the embedded store and through a control API
on loopback: the two files, the digest, every rollout decision of the audit log in order,
the same content both ways, and clear refusals."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from tests.kit import CLI, cli, serving_app
from tests.observe.test_evidence_pack import ENDPOINT, rolled_back_then_promoted, seed

from modelplane.controlplane.api import create_api
from modelplane.observe.evidence_pack import verify_pack
from modelplane.registry.service import Registry, open_registry
from modelplane.security.auth import CachedAuthenticator
from modelplane.security.keys import audit_key_from
from modelplane.security.tokens import TokenStore
from modelplane.settings import Settings
from modelplane.store.db import write_session
from modelplane.store.schema import AuditEventRow

pytestmark = pytest.mark.timeout(120)


@dataclass
class Home:
    env: dict[str, str]
    registry: Registry


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """A user's home whose embedded store holds fraud:2 rolled back once, then promoted."""
    folder = tmp_path / "home"
    env = {**os.environ, "MODELPLANE_HOME": str(folder)}
    env.pop("MODELPLANE_AUDIT_KEY", None)
    settings = Settings(home=folder)
    registry = open_registry(
        settings.resolved_database_url(), settings.resolved_artifact_url(), actor="alice",
        audit_key=audit_key_from(settings),
    )  # fmt: skip
    seed(registry, tmp_path)
    rolled_back_then_promoted(registry)
    yield Home(env, registry)
    registry.close()


def written(out: Path) -> tuple[dict[str, Any], str]:
    pack = json.loads((out / "evidence-fraud-2.json").read_text())
    return pack, (out / "evidence-fraud-2.html").read_text()


def audit_decisions(env: dict[str, str]) -> list[int]:
    """The seqs of every event of the endpoint's rollouts, as ``audit log`` lists them."""
    args = ("audit", "log", "--subject", f"Rollout/{ENDPOINT}", "--limit", "1000", "--json")
    return sorted(e["seq"] for e in json.loads(cli(env, *args)))


def test_the_embedded_store_gives_both_files_with_every_decision_in_order(
    home: Home, tmp_path: Path
) -> None:
    out = tmp_path / "packs"
    shown = json.loads(cli(home.env, "evidence", "fraud:2", "--out", str(out), "--json"))
    pack, page = written(out)
    assert shown["digest"] == verify_pack(pack) == pack["digest"]["value"]
    assert shown["audit_intact"] is True
    assert [d["seq"] for r in pack["rollouts"] for d in r["decisions"]] == audit_decisions(home.env)
    embedded = re.search(r'<script type="application/json" id="evidence">(.*)</script>', page, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1)) == pack
    # checked against an anchor of the chain's head kept apart from the database
    anchors = tmp_path / "elsewhere" / "anchors.jsonl"
    cli(home.env, "audit", "anchor", "--to", str(anchors))
    args = ("evidence", "fraud:2", "--out", str(out), "--anchor", str(anchors))
    assert json.loads(cli(home.env, *args, "--json"))["audit_intact"] is True
    assert written(out)[0]["audit"]["anchors"] == 1
    text = cli(home.env, "evidence", "fraud@champion", "--out", str(out))
    assert "evidence pack of fraud:2" in text
    assert "audit chain intact" in text
    assert "2 rollouts" in text


def test_a_server_gives_the_same_pack(home: Home, tmp_path: Path) -> None:
    store = TokenStore(home.registry.engine)
    reader = store.create(subject="rex", team="risk", scopes=["read"], actor="root").token
    outsider = store.create(subject="gus", team="growth", scopes=["read"], actor="root").token
    app = create_api(home.registry, authenticator=CachedAuthenticator(store.verify))
    local = tmp_path / "local"
    cli(home.env, "evidence", "fraud:2", "--out", str(local))
    client = {**home.env, "MODELPLANE_HOME": str(tmp_path / "client")}
    with serving_app(app) as url:
        cli(client, "login", url, "--token", reader)
        remote = tmp_path / "remote"
        cli(client, "evidence", "fraud:2", "--out", str(remote))
        cli(client, "logout")
        cli(client, "login", url, "--token", outsider)
        refused = subprocess.run(
            [CLI, "evidence", "fraud:2", "--out", str(tmp_path / "no")], env=client,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    here, there = written(local)[0], written(remote)[0]
    verify_pack(there)
    for section in ("package", "contracts", "history", "rollouts", "approvals", "incidents"):
        assert here[section] == there[section], section
    assert here["audit"]["head_hash"] == there["audit"]["head_hash"]
    assert refused.returncode != 0
    assert "team 'risk'" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_bad_refs_and_unknown_versions_are_named(home: Home, tmp_path: Path) -> None:
    bad = subprocess.run([CLI, "evidence", "fraud"], env=home.env, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode != 0
    assert "MODEL:VERSION" in bad.stderr
    missing = subprocess.run([CLI, "evidence", "fraud:7", "--out", str(tmp_path)], env=home.env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert missing.returncode != 0
    assert "fraud:7" in missing.stderr
    assert list(tmp_path.glob("evidence-*")) == []


def test_a_broken_audit_chain_is_written_down_and_fails_the_command(
    home: Home, tmp_path: Path
) -> None:
    with write_session(home.registry.engine) as session:
        session.execute(update(AuditEventRow).where(AuditEventRow.seq == 5).values(actor="eve"))
    done = subprocess.run([CLI, "evidence", "fraud:2", "--out", str(tmp_path)], env=home.env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "audit chain is broken" in done.stderr
    pack, page = written(tmp_path)
    assert pack["audit"]["intact"] is False
    assert "seq 5" in pack["audit"]["problem"]
    assert "BROKEN" in page


DOC = Path(__file__).parents[2] / "docs" / "evidence.md"


def test_the_guides_example_runs_as_written(tmp_path: Path) -> None:
    """docs/evidence.md's 'Try it': train.py, the shell lines, then the digest check."""
    import sys

    text = DOC.read_text()
    blocks = re.findall(r"```(python|sh)\n(.*?)```", text, re.S)
    [check] = [b for kind, b in blocks if kind == "python" and "hashlib" in b]
    [train] = [b for kind, b in blocks if kind == "python" and "# train.py" in b]
    [shell] = [b for kind, b in blocks if kind == "sh" and "python train.py" in b]
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")}
    env.pop("MODELPLANE_AUDIT_KEY", None)
    (tmp_path / "train.py").write_text(train)
    for line in shell.strip().splitlines():
        program, *args = line.split()
        command = [sys.executable if program == "python" else CLI, *args]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, f"{line}: {done.stderr}"
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "digest ok"
    assert (tmp_path / "packs" / "evidence-fraud-1.html").exists()

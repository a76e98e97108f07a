"""The executable's fast path: ``status`` on the standard library alone, with the same
output as the full CLI, and everything else handed to the full CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit import CLI
from typer.testing import CliRunner

from modelplane.cli.entry import database_url, fast
from modelplane.cli.main import app
from modelplane.store.db import open_engine
from modelplane.store.resources import ResourceStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    engine = open_engine(f"sqlite:///{tmp_path / 'state.db'}")
    resources = ResourceStore(engine)
    for name in ("fraud-score", "ads"):
        spec = {"name": name, "team": "risk", "contract": {"name": name},
                "routes": [{"model": "fraud:1", "weight": 90}, {"model": "fraud:2", "weight": 10}],
                "shadows": [{"model": "fraud:3", "percent": 5}]}  # fmt: skip
        resources.apply("Endpoint", name, spec, actor="t")
        conditions = [{"type": "Ready", "status": "True", "reason": "Serving", "message": ""}]
        resources.set_status("Endpoint", name, {"observed_generation": 1, "conditions": conditions,
                                                "serving": {"fraud:1": "fraud:1"}})  # fmt: skip
    engine.dispose()
    return tmp_path


def test_database_url_resolves_as_the_settings_do() -> None:
    assert database_url({"MODELPLANE_DATABASE_URL": "postgresql://h/db"}) == "postgresql://h/db"
    assert database_url({"modelplane_home": "/srv/mp"}) == "sqlite:////srv/mp/state.db"
    empty = {"MODELPLANE_DATABASE_URL": "", "MODELPLANE_HOME": "/srv/mp"}
    assert database_url(empty) == "sqlite:////srv/mp/state.db"
    assert database_url({}) == f"sqlite:///{Path.home() / '.modelplane' / 'state.db'}"


def test_only_status_is_handled_here() -> None:
    assert fast(["status", "--help"]) is None
    assert fast(["--home", "/tmp", "status"]) is None
    assert fast(["versions"]) is None
    assert fast([]) is None


@pytest.mark.parametrize("args", [["status"], ["status", "--json"]])
def test_fast_status_prints_what_the_full_cli_prints(home: Path, args: list[str]) -> None:
    env = {**os.environ, "MODELPLANE_HOME": str(home), "COLUMNS": "400"}
    done = subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    full = CliRunner().invoke(app, ["--home", str(home), *args], terminal_width=400)
    assert full.exit_code == 0, full.output
    assert done.stdout == full.stdout
    if "--json" in args:
        names = [e["name"] for e in json.loads(done.stdout)["endpoints"]]
        assert names == ["ads", "fraud-score"]
    else:
        assert "shadow 5% fraud:3" in done.stdout


def test_fast_status_loads_no_cli_framework(home: Path) -> None:
    probe = (
        "import sys, io, contextlib\n"
        "from modelplane.cli.entry import fast\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert fast(['status']) == 0\n"
        "heavy = ('typer', 'rich', 'pydantic', 'sqlalchemy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "MODELPLANE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=30, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_an_empty_home_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "nothing")}
    done = subprocess.run(
        [CLI, "status"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert done.stdout == "no endpoints (modelplane apply -f endpoint.yaml)\n"

"""The fast entry's rollout commands, ``get`` and ``explain``: the same output, exit codes and
stored changes (resources, a verifiable audit chain) as the full CLI, and the full CLI for
every case they leave to it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.kit import CLI
from typer.testing import CliRunner

from modelplane.cli import fast_commands
from modelplane.cli.entry import database_url
from modelplane.cli.main import app
from modelplane.core import rollout as core_rollout
from modelplane.core.gates import GateResult, Outcome
from modelplane.core.rollout import Phase, RolloutState
from modelplane.observe.predlog import write_predictions, write_requests
from modelplane.observe.records import FeatureEvidence, LatencySplit, PredictionRecord
from modelplane.security.keys import load_audit_key
from modelplane.store import audit
from modelplane.store.db import SCHEMA_HEAD, open_engine, read_session, write_session
from modelplane.store.resources import ResourceStore
from modelplane.store.schema import AuditEventRow, ModelRow, ModelVersionRow

pytestmark = pytest.mark.timeout(120)

ACTOR = "alice"
ENDPOINT = "fraud-score"


def _engine(home: Path) -> Any:
    engine = open_engine(f"sqlite:///{home / 'state.db'}")
    audit.bind_key(engine, load_audit_key(home))
    return engine


@pytest.fixture
def template(tmp_path: Path) -> Path:
    """A home with fraud:1 and fraud:2 registered, an endpoint in a canary rollout (90/10
    and a shadow), a policy, and two kept predictions."""
    home = tmp_path / "template"
    home.mkdir()
    engine = _engine(home)
    with write_session(engine) as session:
        session.add(ModelRow(name="fraud", created_at=datetime.now(UTC), archived=False))
        for version in (1, 2):
            session.add(ModelVersionRow(model_name="fraud", version=version,
                                        digest=f"sha256:{version:064x}", manifest={},
                                        runtime="sklearn", created_at=datetime.now(UTC),
                                        created_by="t", archived=False))  # fmt: skip
    store = ResourceStore(engine)
    endpoint = {"kind": "Endpoint", "name": ENDPOINT, "team": "risk", "tier": "critical",
                "contract": {"name": ENDPOINT, "version": 2},
                "routes": [{"model": "fraud:1", "weight": 90.0},
                           {"model": "fraud:2", "weight": 10.0}],
                "shadows": [{"model": "fraud:2", "percent": 5.0}]}  # fmt: skip
    store.apply("Endpoint", ENDPOINT, endpoint, actor="t")
    store.apply("Policy", "shared", {"kind": "Policy", "placement": "spread"}, actor="t")
    rollout = {"rollout": {"endpoint": ENDPOINT, "to": "fraud:2", "steps": [{"weight": 10}]},
               "stable": "fraud:1", "requested_at": 1.0, "commands": []}  # fmt: skip
    store.apply("Rollout", ENDPOINT, rollout, actor="t")
    gate = GateResult("error_rate", Outcome.PASS, {"error_rate": 0.001})
    state = RolloutState(phase=Phase.CANARY, step=0, weights=(90.0, 10.0), gates=(gate,))
    store.set_status("Rollout", ENDPOINT, {"state": state.to_dict(), "commands_seen": 0})
    latency = LatencySplit(0.5, 1.25, 3.0, 4.75)
    features = FeatureEvidence(("customer",), {"customer": 12.5}, ("age",))
    write_predictions(engine, [
        PredictionRecord("req-ok", 1_700_000_000.5, ENDPOINT, ENDPOINT, 2, 200, latency,
                         "fraud:2", f"sha256:{2:064x}", "fraud:2", "canary", batch_size=3,
                         features=features),
        PredictionRecord("req-fb", 1_700_000_001.0, ENDPOINT, ENDPOINT, 2, 200, latency,
                         "fraud:9", None, "fraud:1", "fallback", fallback_reason="timeout",
                         detail="deadline passed"),
    ])  # fmt: skip
    write_requests(engine, [PredictionRecord("req-brief", 1_700_000_002.25, ENDPOINT, ENDPOINT,
                                             2, 200, latency, "fraud:1", f"sha256:{1:064x}",
                                             "fraud:1", brief=True)])  # fmt: skip
    engine.dispose()
    return home


@pytest.fixture
def homes(template: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the template: one for the fast path, one for the full CLI."""
    fast, full = tmp_path / "fast", tmp_path / "full"
    shutil.copytree(template, fast)
    shutil.copytree(template, full)
    return fast, full


def environ(home: Path) -> dict[str, str]:
    return {**os.environ, "MODELPLANE_HOME": str(home), "MODELPLANE_ACTOR": ACTOR}


def run_fast(home: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    env = environ(home)
    capsys.readouterr()
    code = fast_commands.run(args, env, database_url(env))
    assert code is not None, f"{args} was left to the full CLI"
    return code, capsys.readouterr().out


def run_full(home: Path, args: list[str]) -> tuple[int, str]:
    done = CliRunner().invoke(app, ["--home", str(home), *args], env={"MODELPLANE_ACTOR": ACTOR})
    return done.exit_code, done.stdout


def stored(home: Path) -> dict[str, Any]:
    """What the commands changed, without the instants they did it at."""
    engine = _engine(home)
    try:
        with read_session(engine) as session:
            report = audit.verify(session)  # the fast path's links are chained and keyed
            events = [
                (e.actor, e.action, e.subject, e.reason, _timeless(e.before), _timeless(e.after),
                 e.mac is not None)
                for e in session.scalars(select(AuditEventRow).order_by(AuditEventRow.seq))
            ]  # fmt: skip
        found = {
            (r.kind, r.name): (r.generation, _timeless(r.spec))
            for kind in ("Endpoint", "Rollout")
            for r in ResourceStore(engine).list(kind)
        }
    finally:
        engine.dispose()
    return {"events": events, "resources": found, "chain": report.events}


def _timeless(spec: Any) -> Any:
    if isinstance(spec, dict) and "commands" in spec:
        return {**spec, "commands": [{**c, "at": "-"} for c in spec["commands"]]}
    return spec


ROLLOUT_SCRIPTS = [
    [["pause", ENDPOINT]],
    [["pause", ENDPOINT, "--reason", "looks odd"], ["resume", "--json", ENDPOINT]],
    [["promote", ENDPOINT, "--reason=enough seen"]],
    [["rollback", ENDPOINT]],
    [["pause", ENDPOINT], ["rollback", ENDPOINT, "--json", "--reason", "p99 doubled"]],
    [["promote", ENDPOINT], ["rollback", ENDPOINT]],  # promoting: may still roll back
]


@pytest.mark.parametrize("script", ROLLOUT_SCRIPTS)
def test_rollout_commands_say_and_store_what_the_full_cli_does(
    homes: tuple[Path, Path], script: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    fast, full = homes
    for args in script:
        assert run_fast(fast, args, capsys) == run_full(full, args), args
    assert stored(fast) == stored(full)


def test_rollback_moves_all_traffic_to_stable(
    homes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fast, _ = homes
    code, out = run_fast(fast, ["rollback", ENDPOINT], capsys)
    assert (code, out) == (0, f"rollout/{ENDPOINT}: rollback recorded (now rolling_back);"
                              " all traffic back on stable\n")  # fmt: skip
    endpoint = stored(fast)["resources"][("Endpoint", ENDPOINT)]
    assert endpoint[0] == 2
    assert (endpoint[1]["routes"], endpoint[1]["shadows"]) == (
        [{"model": "fraud:1", "weight": 100.0}], []
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["resume", ENDPOINT],  # not paused: changes nothing, and the full CLI says so
        ["pause", "nowhere"],  # no such rollout
        ["pause", ENDPOINT, "--help"],
        ["pause", ENDPOINT, "--dry-run"],
        ["rollback"],
        ["get", "widgets"],
        ["get", "endpoints", "nowhere"],
        ["explain", "never-seen"],
        ["versions"],
    ],
)
def test_what_the_fast_path_leaves_to_the_full_cli(
    homes: tuple[Path, Path], args: list[str]
) -> None:
    fast, _ = homes
    before = stored(fast)
    env = environ(fast)
    assert fast_commands.run(args, env, database_url(env)) is None
    assert stored(fast) == before


def test_a_refused_command_is_the_full_clis(
    homes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fast, full = homes
    for home in homes:
        env = environ(home)
        assert fast_commands.run(["rollback", ENDPOINT], env, database_url(env)) == 0
    capsys.readouterr()
    # rolled back: a second rollback changes nothing, a promote is refused with a hint
    env = environ(fast)
    for args in (["rollback", ENDPOINT], ["promote", ENDPOINT]):
        assert fast_commands.run(args, env, database_url(env)) is None
    code, _ = run_full(full, ["promote", ENDPOINT])
    assert code == 7


def test_other_stores_and_a_chosen_server_go_to_the_full_cli(template: Path) -> None:
    env = environ(template)
    assert fast_commands.run(["get", "ep"], env, "postgresql://postgres@127.0.0.1/x") is None
    (template / "remote.json").write_text('{"url": "http://127.0.0.1:1"}')
    assert fast_commands.run(["get", "ep"], env, database_url(env)) is None


def test_a_key_file_open_to_others_goes_to_the_full_cli(template: Path) -> None:
    (template / "audit.key").chmod(0o644)
    env = environ(template)
    assert fast_commands.run(["pause", ENDPOINT], env, database_url(env)) is None


@pytest.mark.parametrize(
    "args",
    [
        ["get", "endpoints"],
        ["get", "ep", ENDPOINT, "--json"],
        ["get", "rollouts", "--json"],
        ["get", "policies"],
        ["get", "featuresets"],
        ["explain", "req-ok"],
        ["explain", "req-ok", "--json"],
        ["explain", "--json", "req-fb"],
        ["explain", "req-brief"],
        ["explain", "req-brief", "--json"],
    ],
)
def test_reads_print_what_the_full_cli_prints(
    homes: tuple[Path, Path], args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    fast, full = homes
    assert run_fast(fast, args, capsys) == run_full(full, args)


def test_the_executable_takes_the_fast_path_without_the_cli_framework(template: Path) -> None:
    probe = (
        "import sys, io, contextlib\n"
        "from modelplane.cli.entry import fast\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert fast(['rollback', '{ENDPOINT}', '--reason', 'now']) == 0\n"
        "    assert fast(['explain', 'req-ok', '--json']) == 0\n"
        "    assert fast(['get', 'rollouts', '--json']) == 0\n"
        "heavy = ('typer', 'rich', 'pydantic', 'sqlalchemy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=environ(template),
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"
    shown = subprocess.run([CLI, "get", "rollouts", "--json"], env=environ(template),
                           capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    [rollout] = json.loads(shown.stdout)
    assert [c["command"] for c in rollout["spec"]["commands"]] == ["rollback"]


def test_the_mirrored_tables_match_their_sources() -> None:
    assert fast_commands.SCHEMA == SCHEMA_HEAD
    for command in core_rollout.Command:
        allowed = {phase.value for phase in core_rollout._ALLOWED[command]}
        already = {phase.value for phase in core_rollout._ALREADY[command]}
        assert fast_commands.ALLOWED[command.value] == allowed
        assert fast_commands.ALREADY[command.value] == already

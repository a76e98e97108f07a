"""``modelplane explain`` and ``modelplane status`` through the CLI, over one state store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.dataplane import gateway_kit as kit
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.cli.status_text import status_lines
from modelplane.controlplane.endpoints import write_heartbeat
from modelplane.controlplane.slo import EndpointCounters, SloRecorder, Tally
from modelplane.core.gates import GateResult, Outcome
from modelplane.core.rollout import Phase, RolloutState
from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.server import ServerThread
from modelplane.observe.predlog import PredictionLog, PredictionLogConfig
from modelplane.registry.service import open_registry
from modelplane.spec.contract import SLO
from modelplane.spec.rollout import RolloutSpec
from modelplane.store.resources import ResourceStore

pytestmark = pytest.mark.timeout(120)
fm = kit.fake_models


def run(home: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--home", str(home), *args])


def ready_status(
    labels: dict[str, str], ready: int, total: int, generation: int = 1
) -> dict[str, Any]:
    condition = {"type": "Ready", "status": "True" if ready else "False",
                 "reason": "Serving" if ready else "Starting", "message": "",
                 "observed_generation": generation}  # fmt: skip
    return {"observed_generation": generation, "serving": labels,
            "replicas": {"ready": ready, "total": total}, "conditions": [condition]}  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A store with echo:1 registered and two endpoints: echo-fb (served, ready) and
    split (two routes, 75/25, not ready yet)."""
    home = tmp_path / "home"
    registry = open_registry(f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="t")
    registry.push(kit.source("echo").directory)
    resources = ResourceStore(registry.engine)
    config = kit.EndpointBuilder("echo-fb", "echo", contract=kit.echo_contract("echo-fb"))
    endpoint = config.static_fallback(kit.ECHO_FALLBACK).build().endpoint
    resources.apply("Endpoint", "echo-fb", endpoint.model_dump(mode="json"), actor="t")
    resources.set_status("Endpoint", "echo-fb", ready_status({"echo:1": "echo:1"}, 1, 1))
    split = endpoint.model_dump(mode="json") | {
        "name": "split", "tier": "critical", "fallback": None,
        "routes": [{"model": "echo:1", "weight": 75}, {"model": "echo@next", "weight": 25}],
    }  # fmt: skip
    resources.apply("Endpoint", "split", split, actor="t")
    resources.set_status("Endpoint", "split", ready_status({"echo:1": "echo:1"}, 0, 2))
    write_heartbeat(resources, time.time())  # a gateway reports these statuses
    registry.close()
    return home


def serve_requests(home: Path, *, keep_every_request: bool = True) -> None:
    """A gateway wired to the store in ``home``, as ``modelplane up`` wires it."""
    registry = open_registry(f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="t")
    built = kit.EndpointBuilder("echo-fb", "echo", contract=kit.echo_contract("echo-fb"))
    server = ServerThread([built.static_fallback(kit.ECHO_FALLBACK).build()],
                          config=kit.gateway_config())  # fmt: skip
    config = PredictionLogConfig(sample_rate=0.0, keep_every_request=keep_every_request)
    server.gateway.sink = PredictionLog(registry.engine, config)
    with server, httpx.Client(base_url=server.url, timeout=10.0) as client:
        for request_id, first in (("plain-1", 1.0), ("fb-1", fm.RAISE)):
            body = encode_request(kit.echo_inputs(1, first=first)).body
            client.post("/v2/models/echo-fb/infer", content=body,
                        headers={"x-request-id": request_id})  # fmt: skip
    registry.close()


def test_explain_a_fallback_end_to_end(home: Path) -> None:
    serve_requests(home)
    done = run(home, "explain", "fb-1", "--json")
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout)
    assert found["endpoint"] == "echo-fb"
    assert (found["model_version"], found["digest"]) == ("echo:1", kit.source("echo").digest)
    assert found["registry"]["digest"] == found["digest"]
    assert found["contract"] == {"name": "echo-fb", "version": 1}
    assert found["endpoint_spec"]["generation"] == 1
    assert not found["endpoint_spec"]["changed_since"]
    # echo:1 was tried and failed; the static fallback answered
    assert found["route"] == {"ref": "echo:1", "kind": "fallback"}
    assert found["fallback"]["used"]
    assert found["fallback"]["reason"] == "worker_failed"
    assert "negative two" in found["fallback"]["why"]
    latency = found["latency_ms"]
    assert latency["queue"] + latency["batch"] + latency["compute"] <= latency["total"]

    text = run(home, "explain", "fb-1")
    assert text.exit_code == 0, text.output
    assert "worker_failed" in text.stdout
    assert "matches the registry" in text.stdout


def test_explain_an_unsampled_request_from_its_brief_record(home: Path) -> None:
    serve_requests(home)  # sample rate 0: the plain success was not sampled
    done = run(home, "explain", "plain-1", "--json")
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout)
    assert found["record"] == "brief"
    assert (found["status"], found["model_version"]) == (200, "echo:1")
    assert found["route"] == {"ref": "echo:1", "kind": "stable"}
    assert (found["fallback"]["used"], found["error"], found["features"]) == (False, None, None)
    assert found["latency_ms"]["total"] > 0
    text = run(home, "explain", "plain-1")
    assert "a brief record (not sampled): no features" in text.stdout


def test_explain_a_request_never_kept_says_how_to_keep_more(home: Path) -> None:
    serve_requests(home, keep_every_request=False)
    done = run(home, "explain", "plain-1")
    assert done.exit_code == 6
    assert "every request is kept briefly" in done.output
    assert "modelplane up --sample-rate" in done.output  # how to keep more


def test_status_text_and_json(home: Path) -> None:
    done = run(home, "status", "--json")
    assert done.exit_code == 0, done.output
    endpoints = {e["name"]: e for e in json.loads(done.stdout)["endpoints"]}
    assert list(endpoints) == ["echo-fb", "split"]
    echo = endpoints["echo-fb"]
    digest = kit.source("echo").digest
    assert (echo["team"], echo["tier"]) == ("test", "standard")
    assert echo["contract"] == {"name": "echo-fb", "version": 1}
    assert echo["routes"] == [{"model": "echo:1", "weight_percent": 100.0, "version": "echo:1",
                               "digest": digest, "short_digest": digest[:19]}]  # fmt: skip
    assert echo["replicas"] == {"ready": 1, "total": 1}
    assert echo["health"]["ready"] is True
    assert (echo["rollout"], echo["slo_budget"]) == (None, None)
    split = endpoints["split"]
    assert [r["weight_percent"] for r in split["routes"]] == [75.0, 25.0]
    assert split["routes"][1]["version"] is None
    assert split["health"] == {"ready": False, "reason": "Starting", "message": ""}

    text = run(home, "status")
    assert text.exit_code == 0, text.output
    for expected in ("echo-fb", "split", "critical", "echo-fb v1", digest[:19], "1/1", "0/2",
                     "Ready", "NotReady (Starting)", "75% echo:1", "unresolved"):  # fmt: skip
        assert expected in text.stdout, expected


def test_status_says_when_no_gateway_reports(home: Path) -> None:
    registry = open_registry(f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="t")
    write_heartbeat(ResourceStore(registry.engine), time.time() - 600)  # up stopped long ago
    registry.close()
    done = run(home, "status", "--json")
    echo = next(e for e in json.loads(done.stdout)["endpoints"] if e["name"] == "echo-fb")
    assert echo["stale"] is True
    assert echo["health"]["reason"] == "NotReporting"
    assert "last seen: Ready" in echo["health"]["message"]
    text = run(home, "status").stdout
    assert "1/1 (stale)" in text
    assert "no gateway reporting" in text


def test_status_of_an_empty_home(tmp_path: Path) -> None:
    done = run(tmp_path / "nothing", "status")
    assert done.exit_code == 0, done.output
    assert "no endpoints" in done.stdout


class Serving:
    """echo-fb's counters as the gateway reports them: 2 % errors, a few slow answers."""

    def served(self) -> dict[str, EndpointCounters]:
        tally = Tally(avail_good=980, avail_total=1_000, latency_good=995, latency_total=1_000)
        return {"echo-fb": EndpointCounters(SLO(availability=0.99), {"route": tally})}


def test_status_shows_the_slo_budget_and_a_rollout_in_progress(home: Path) -> None:
    registry = open_registry(f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="t")
    resources = ResourceStore(registry.engine)
    spec = RolloutSpec.model_validate({"endpoint": "split", "to": "echo:2"})
    document = {"rollout": spec.model_dump(mode="json"), "stable": "echo:1", "commands": []}
    resources.apply("Rollout", "split", document, actor="t")
    gate = GateResult("error_rate", Outcome.PASS, {"error_rate": 0.001, "stable": 0.0})
    state = RolloutState(phase=Phase.CANARY, step=1, weights=(75.0, 25.0), gates=(gate,))
    # the controller's readings on the running step's window so far, 40 s into it
    waiting = GateResult("samples", Outcome.INCONCLUSIVE, {"requests": 12.0}, "12 of 100")
    readings = {"step": 2, "since": 100.0, "at": 140.0, "gates": [waiting.to_dict()]}
    resources.set_status("Rollout", "split", {"state": state.to_dict(), "readings": readings})
    asyncio.run(SloRecorder(registry.engine, Serving()).record())
    registry.close()

    done = run(home, "status", "--json")
    assert done.exit_code == 0, done.output
    endpoints = {e["name"]: e for e in json.loads(done.stdout)["endpoints"]}
    budget = endpoints["echo-fb"]["slo_budget"]
    assert budget["availability"]["remaining"] == pytest.approx(-1.0)  # 2 % of a 1 % budget
    # burning 2x, but ten seconds of data judge no alert: none fires, and status says why
    assert budget["availability"]["firing"] == []
    assert budget["availability"]["not_judged"] == ["page-1h", "page-6h", "ticket-72h"]
    assert set(budget["availability"]["burn_rates"]) == {"5m", "30m", "1h", "6h", "3d"}
    assert budget["latency"]["remaining"] == pytest.approx(0.5)  # 0.5 % slow, 1 % allowed
    rollout = endpoints["split"]["rollout"]
    assert (rollout["to"], rollout["phase"], rollout["step"], rollout["steps"]) == (
        "echo:2", "canary", 2, 4
    )  # fmt: skip
    assert rollout["canary_weight"] == 25.0
    assert rollout["readings"]["gates"] == [waiting.to_dict()]
    assert rollout["gates"] == [gate.to_dict()]
    assert endpoints["split"]["slo_budget"] is None

    text = run(home, "status")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert len(lines) == 4, text.stdout  # header, two endpoints, one rollout line
    header, echo, split, detail = lines
    assert header.split()[-4:] == ["ROLLOUT", "ERROR", "BUDGET", "LEFT"]
    assert "REPLICAS (READY/TOTAL)" in header
    assert echo.endswith("avail -100.0% left, latency 50.0% left (too little data for alerts)")
    assert "canary 25% -> echo:2" in split
    assert detail.startswith("  rollout echo:1 -> echo:2 (canary) step 2/4, canary 25%")
    assert detail.endswith("; gates on 40s of step 2: samples inconclusive (requests 12)")


def _endpoint(budget: dict[str, Any] | None, rollout: dict[str, Any] | None) -> dict[str, Any]:
    return {"name": "e", "team": None, "tier": "standard", "contract": {"name": "c", "version": 1},
            "routes": [], "shadows": [], "replicas": None, "health": {"ready": True, "reason": ""},
            "observed_generation": 1, "generation": 1, "rollout": rollout,
            "slo_budget": budget}  # fmt: skip


@pytest.mark.parametrize(
    ("firing", "not_judged", "cell"),
    [
        ([], ["page-1h", "ticket-72h"], "avail 44.4% left, latency 99.0% left (too little data"
         " for alerts)"),
        ([], ["ticket-72h"], "avail 44.4% left, latency 99.0% left"),
        (["page-1h"], ["ticket-72h"], "avail 44.4% left, latency 99.0% left FIRING avail page-1h"),
    ],
)  # fmt: skip
def test_the_budget_cell_says_left_and_whether_alerts_judge(
    firing: list[str], not_judged: list[str], cell: str
) -> None:
    alerts = ["page-1h", "ticket-72h"]
    availability = {"remaining": 0.444, "alerts": alerts, "firing": firing,
                    "not_judged": not_judged}  # fmt: skip
    latency = {"remaining": 0.99, "alerts": alerts, "firing": [], "not_judged": not_judged}
    budget = {"availability": availability, "latency": latency}
    _, row = status_lines([_endpoint(budget, None)])
    assert row.endswith(cell)


def test_without_readings_the_last_judgement_shows() -> None:
    rollout = {"from": "m:1", "to": "m:2", "strategy": "canary", "phase": "canary",
               "in_progress": True, "step": 1, "steps": 2, "canary_weight": 5.0,
               "shadow_percent": 0.0, "paused_from": None, "gates": [],
               "readings": None}  # fmt: skip
    *_, detail = status_lines([_endpoint(None, rollout)])
    assert detail.endswith("gates: not judged yet")
    judged = GateResult("error_rate", Outcome.FAIL, {"error_rate": 0.2}).to_dict()
    *_, detail = status_lines([_endpoint(None, rollout | {"gates": [judged]})])
    assert detail.endswith("gates: error_rate fail (error_rate 0.2)")


def test_up_help_says_what_sample_rate_keeps(home: Path) -> None:
    done = CliRunner().invoke(app, ["up", "--help"], terminal_width=400)
    assert done.exit_code == 0, done.output
    text = " ".join(done.stdout.replace("│", " ").split())  # rich boxes and wraps the help
    assert "--sample-rate" in text
    assert "every other request keeps a brief record for an hour" in text

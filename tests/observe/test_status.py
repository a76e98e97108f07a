"""``read_status`` on SQLite (the stdlib fast path) and PostgreSQL: endpoints with their
rollout (from the rollout controller's state) and SLO budget (from the SLO recorder)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from modelplane.controlplane.slo import EndpointCounters, SloRecorder, Tally
from modelplane.core.gates import GateResult, Outcome
from modelplane.core.rollout import TERMINAL, Event, Phase, RolloutState
from modelplane.observe.status import (
    FINISHED_PHASES,
    read_status,
    rollout_status,
    slo_budget,
)
from modelplane.spec.contract import SLO
from modelplane.spec.rollout import CanaryStep, RolloutSpec
from modelplane.store.db import open_engine
from modelplane.store.resources import ResourceStore
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(60)


class Serving:
    """One endpoint's cumulative counters, as the gateway would report them."""

    def __init__(self, name: str, tally: Tally) -> None:
        self.name, self.tally = name, tally

    def served(self) -> dict[str, EndpointCounters]:
        return {self.name: EndpointCounters(SLO(availability=0.99), {"route": self.tally})}


def rollout_spec() -> dict[str, Any]:
    steps = (CanaryStep(weight=5, hold_s=60), CanaryStep(weight=25, hold_s=60),
             CanaryStep(weight=100, hold_s=60))  # fmt: skip
    spec = RolloutSpec(endpoint="fraud-score", to="fraud:2", steps=steps)
    return {"rollout": spec.model_dump(mode="json"), "stable": "fraud:1", "requested_at": 5.0,
            "commands": []}  # fmt: skip


def rollout_state(phase: Phase = Phase.CANARY) -> dict[str, Any]:
    gates = (
        GateResult("samples", Outcome.PASS, {"requests": 120.0}),
        GateResult("error_rate", Outcome.INCONCLUSIVE, {"error_rate": 0.004}, "too few"),
    )
    history = (Event(10.0, Phase.CANARY, 1, "step 2 of 3: canary 25% for 60s"),)
    state = RolloutState(phase=phase, step=1, weights=(75.0, 25.0), gates=gates, history=history)
    return {"state": state.to_dict(), "commands_seen": 0}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    resources = ResourceStore(engine)
    for name in ("fraud-score", "idle", "quiet"):
        spec = {"name": name, "contract": {"name": name},
                "routes": [{"model": "fraud:1"}]}  # fmt: skip
        resources.apply("Endpoint", name, spec, actor="t")
    shadowed = {
        "name": "fraud-score",
        "contract": {"name": "fraud-score"},
        "routes": [{"model": "fraud:1"}],
        "shadows": [{"model": "fraud:2", "percent": 25}],
    }
    resources.apply("Endpoint", "fraud-score", shadowed, actor="t")
    resources.set_status(
        "Endpoint", "fraud-score", {"serving": {"fraud:1": "fraud:1", "fraud:2": "fraud:2"}}
    )
    resources.apply("Rollout", "fraud-score", rollout_spec(), actor="t")
    resources.set_status("Rollout", "fraud-score", rollout_state())
    resources.apply("Rollout", "idle", rollout_spec(), actor="t")
    resources.set_status("Rollout", "idle", rollout_state(Phase.PROMOTED) | {"settled": True})
    clock = FakeClock(1_700_000_000.0)
    for name, tally in (("fraud-score", Tally(990, 1_000, 1_000, 1_000)), ("quiet", Tally())):
        asyncio.run(SloRecorder(engine, Serving(name, tally), clock=clock).record())
    yield engine
    engine.dispose()


def test_status_carries_rollouts_and_slo_budgets(database_url: str, engine: Engine) -> None:
    endpoints = {e["name"]: e for e in read_status(database_url)["endpoints"]}
    assert list(endpoints) == ["fraud-score", "idle", "quiet"]
    [shadow] = endpoints["fraud-score"]["shadows"]
    assert (shadow["model"], shadow["percent"], shadow["version"]) == ("fraud:2", 25.0, "fraud:2")
    assert endpoints["quiet"]["shadows"] == []
    rollout = endpoints["fraud-score"]["rollout"]
    assert rollout == {
        "from": "fraud:1", "to": "fraud:2", "strategy": "canary", "phase": "canary",
        "in_progress": True, "step": 2, "steps": 3, "canary_weight": 25.0,
        "shadow_percent": 0.0, "paused_from": None,
        "gates": [
            {"name": "samples", "outcome": "pass", "reading": {"requests": 120.0}, "reason": ""},
            {"name": "error_rate", "outcome": "inconclusive",
             "reading": {"error_rate": 0.004}, "reason": "too few"},
        ],
        "readings": None,
        "last_event": "step 2 of 3: canary 25% for 60s", "requested_at": 5.0,
    }  # fmt: skip
    budget = endpoints["fraud-score"]["slo_budget"]
    availability = budget["availability"]
    assert (availability["good"], availability["total"], availability["objective"]) == (
        990,
        1_000,
        0.99,
    )
    assert availability["remaining"] == pytest.approx(0.0)  # 1 % errors spend a 1 % budget
    assert availability["burn_rates"]["1h"] == pytest.approx(1.0)
    assert availability["firing"] == []
    assert budget["latency"]["remaining"] == pytest.approx(1.0)

    finished = endpoints["idle"]["rollout"]
    assert (finished["phase"], finished["in_progress"]) == ("promoted", False)
    assert endpoints["idle"]["slo_budget"] is None  # no report at all
    assert endpoints["quiet"]["slo_budget"] is None  # a report, but no traffic yet
    assert endpoints["quiet"]["rollout"] is None


def test_finished_phases_are_the_rollout_state_machines_terminal_ones() -> None:
    assert {phase.value for phase in TERMINAL} == FINISHED_PHASES


def test_a_rollout_not_yet_reconciled_is_pending_at_its_first_step() -> None:
    rollout = rollout_status(rollout_spec(), None)
    assert (rollout["phase"], rollout["step"], rollout["steps"]) == ("pending", 1, 3)
    assert (rollout["canary_weight"], rollout["gates"], rollout["in_progress"]) == (0.0, [], True)


def test_the_running_steps_readings_are_shown_with_the_rollout() -> None:
    gate = GateResult("samples", Outcome.INCONCLUSIVE, {"requests": 12.0}, "12 of 100")
    readings = {"step": 2, "since": 100.0, "at": 130.0, "gates": [gate.to_dict()]}
    rollout = rollout_status(rollout_spec(), {**rollout_state(), "readings": readings})
    assert rollout["readings"] == readings


def test_an_empty_report_is_no_budget() -> None:
    assert slo_budget(None) is None
    assert slo_budget({}) is None
    empty = {"availability": {"total": 0}, "latency": {"total": 0}}
    assert slo_budget(empty) is None
    assert slo_budget({**empty, "latency": {"total": 3}}) is not None


def test_what_the_sandbox_cannot_take_away_is_in_the_status(
    database_url: str, engine: Engine
) -> None:
    """The serving gateway says, with its heartbeat, what its machine's workers keep (a server
    that is not root keeps its namespaces and uid); status shows it while the gateway reports,
    and the text says it once, under the table."""
    from modelplane.cli.status_text import status_lines
    from modelplane.controlplane.endpoints import write_heartbeat

    resources = ResourceStore(engine)
    not_root = "the server does not run as root"
    missing = {"mount_ns": not_root, "uid": not_root}
    write_heartbeat(resources, time.time(), sandbox_missing=missing)
    document = read_status(database_url)
    assert document["sandbox_missing"] == missing
    lines = list(status_lines(document["endpoints"], document["sandbox_missing"]))
    sandbox = [line for line in lines if line.startswith("SANDBOX")]
    assert sandbox == [
        "SANDBOX model workers here run without: mount_ns (the server does not run as root);"
        " uid (the server does not run as root). See docs/security.md#the-sandbox"
    ]
    # the whole sandbox holds: nothing said
    write_heartbeat(resources, time.time())
    assert read_status(database_url)["sandbox_missing"] == {}
    # a gateway that stopped reporting says nothing of the present
    write_heartbeat(resources, time.time() - 3600, sandbox_missing=missing)
    document = read_status(database_url)
    assert document["sandbox_missing"] == {}
    lines = list(status_lines(document["endpoints"], document["sandbox_missing"]))
    assert not [line for line in lines if line.startswith("SANDBOX")]

"""The evidence pack of a version taken through rollouts by the real rollout controller over a
real SQLite store and registry (route counters moved by the test, as traffic would): every
decision of the audit log, in order; who pushed, promoted and approved; incidents from the
prediction log; the audit chain's verification; the digest and the self-contained page."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert, update

from modelplane.controlplane.apply import Applier
from modelplane.controlplane.rollouts import RolloutController, record_command, start_rollout
from modelplane.core.drift import Histogram
from modelplane.core.gates import ArmStats, ShadowStats
from modelplane.core.rollout import Command, Phase
from modelplane.errors import IntegrityError, InvalidSpec, NotFound
from modelplane.observe.evidence_pack import (
    build_pack,
    canonical_bytes,
    content_digest,
    pack_stem,
    parse_version_ref,
    verify_pack,
)
from modelplane.observe.evidence_page import render_page
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry
from modelplane.security.signing import Signature, sign, signature_valid
from modelplane.spec.rollout import CanaryStep, ErrorRateGate, MinSamplesGate, RolloutSpec
from modelplane.store.audit import AuditKey
from modelplane.store.db import write_session
from modelplane.store.resources import ResourceStore
from modelplane.store.schema import AuditEventRow, PredictionRow, SloIntervalRow
from modelplane.types import FakeClock

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(60)

ENDPOINT = "fraud-score"
STABLE, CANARY = "fraud@champion", "fraud:2"
BOUNDS = (10.0, 100.0, float("inf"))
KEY = AuditKey(b"k" * 32)


class Counters:
    """Cumulative route counters, moved by the test as served traffic would move them."""

    def __init__(self) -> None:
        self.ready: set[str] = {STABLE, CANARY}
        self.arms: dict[str, ArmStats] = {}

    def route_ready(self, endpoint: str, model: str) -> bool:
        return model in self.ready

    def route_stats(self, endpoint: str, model: str) -> ArmStats | None:
        return self.arms.get(model)

    def shadow_stats(self, endpoint: str, model: str) -> ShadowStats | None:
        return None

    def serve(self, model: str, requests: int, errors: int = 0) -> None:
        old = self.arms.get(model, ArmStats(latency_ms=Histogram(BOUNDS, (0, 0, 0))))
        assert old.latency_ms is not None
        fast, mid, slow = old.latency_ms.counts
        self.arms[model] = ArmStats(
            old.requests + requests, old.errors + errors,
            Histogram(BOUNDS, (fast + requests, mid, slow)),
        )  # fmt: skip


def check(key_id: str, public_key: str, signature: str, name: str, digest: str) -> bool:
    return signature_valid(Signature(key_id, public_key, signature), name, digest)


def seed(registry: Registry, tmp_path: Path) -> None:
    """fraud:1 (champion) and fraud:2 of team risk; fraud-score serving fraud@champion."""
    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(30, 2)), columns=["a", "b"])
    for version, c in enumerate((1.0, 0.1), start=1):
        model = LogisticRegression(C=c).fit(frame, (frame["a"] > 0).astype(int))
        built = package(model, name="fraud", output_dir=tmp_path / f"p{version}",
                        sample_input=frame.head())  # fmt: skip
        registry.push(built.path, reason=f"train run {version}", team="risk")
    registry.set_alias("fraud", "champion", 1)
    endpoint = {
        "kind": "Endpoint", "name": ENDPOINT, "team": "risk",
        "contract": {
            "name": ENDPOINT,
            "inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
            "slo": {"availability": 0.99, "latency_ms": 50},
        },
        "routes": [{"model": STABLE}],
    }  # fmt: skip
    Applier(registry, ResourceStore(registry.engine), actor="alice").apply_all([endpoint])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(
        f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="alice", audit_key=KEY
    )
    seed(registry, tmp_path)
    yield registry
    registry.close()


@pytest.fixture
def either(tmp_path: Path, database_url: str) -> Iterator[Registry]:
    """The seeded registry on SQLite, then on PostgreSQL."""
    registry = open_registry(database_url, str(tmp_path / "art"), actor="alice", audit_key=KEY)
    seed(registry, tmp_path)
    yield registry
    registry.close()


def rollout_spec() -> RolloutSpec:
    steps = (CanaryStep(weight=10, hold_s=10), CanaryStep(weight=100, hold_s=10))
    gates = (MinSamplesGate(requests=10, name="samples"), ErrorRateGate(max_rate=0.02))
    return RolloutSpec.model_validate(
        {"endpoint": ENDPOINT, "to": CANARY, "steps": steps, "gates": gates}
    )


def first_step(registry: Registry, clock: FakeClock, counters: Counters) -> RolloutController:
    start_rollout(registry, rollout_spec(), actor="alice", now=clock.wall(), reason="ticket 7")
    controller = RolloutController(registry, counters, clock=clock)
    for _ in range(2):  # warm the canary, then give it its first weight
        controller.reconcile_one(ENDPOINT)
        clock.advance(1)
    return controller


def rolled_back_then_promoted(registry: Registry) -> None:
    """fraud:2 fails its error gate once (rolled back), then is promoted after a pause and
    a person's resume."""
    clock, counters = FakeClock(time.time()), Counters()
    controller = first_step(registry, clock, counters)
    counters.serve(STABLE, 900, errors=1)
    counters.serve(CANARY, 100, errors=5)
    clock.advance(11)
    assert controller.reconcile_one(ENDPOINT).phase is Phase.ROLLED_BACK
    counters = Counters()
    counters.serve(STABLE, 500)  # before the rollout: not part of any window
    controller = first_step(registry, clock, counters)
    engine = registry.engine
    record_command(engine, ENDPOINT, Command.PAUSE, actor="bob", now=clock.wall(), reason="look")
    record_command(engine, ENDPOINT, Command.RESUME, actor="carol", now=clock.wall())
    controller.reconcile_one(ENDPOINT)
    counters.serve(STABLE, 180)
    counters.serve(CANARY, 20)
    clock.advance(11)
    assert controller.reconcile_one(ENDPOINT).step == 1
    counters.serve(CANARY, 200)
    clock.advance(11)
    assert controller.reconcile_one(ENDPOINT).phase is Phase.PROMOTED


def rollout_seqs(registry: Registry) -> list[int]:
    events = registry.audit_events(subject=f"Rollout/{ENDPOINT}", limit=10_000)
    return [e.seq for e in reversed(events)]


def pack_of(registry: Registry, ref: str = CANARY) -> dict[str, Any]:
    return build_pack(registry.engine, ref, now=datetime.now(UTC), signature_check=check)


def test_the_pack_lists_every_rollout_decision_of_the_audit_log_in_order(
    either: Registry,
) -> None:
    registry = either
    rolled_back_then_promoted(registry)
    pack = pack_of(registry)
    assert pack["subject"] == "fraud:2"
    first, second = pack["rollouts"]
    assert (first["outcome"], second["outcome"]) == ("rolled_back", "promoted")
    assert first["role"] == second["role"] == "to"
    listed = [d["seq"] for r in pack["rollouts"] for d in r["decisions"]]
    assert listed == rollout_seqs(registry)  # every one, in the chain's order
    by_seq = {e.seq: e for e in registry.audit_events(limit=10_000)}
    for decision in (d for r in pack["rollouts"] for d in r["decisions"]):
        event = by_seq[decision["seq"]]
        assert (decision["action"], decision["actor"], decision["hash"]) == (
            event.action, event.actor, event.hash
        )  # fmt: skip
        assert decision["gates"] == ((event.after or {}).get("gates") or [])
    failed = next(d for d in first["decisions"] if "gates failed" in d["reason"])
    readings = {g["name"]: g["reading"] for g in failed["gates"]}
    assert readings["error_rate"]["canary_error_rate"] == pytest.approx(0.05)
    kinds = [d["kind"] for d in second["decisions"] if d["action"] == "rollout.apply"]
    assert kinds == ["start", "command pause", "command resume"]
    # the same story told from fraud:1's side: traffic moved away from it
    old = pack_of(registry, "fraud:1")
    assert [r["role"] for r in old["rollouts"]] == ["from", "from"]


def test_who_pushed_promoted_and_approved_and_what_it_served(registry: Registry) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signed = sign(Ed25519PrivateKey.generate(), "fraud", registry.get(CANARY).digest)
    registry.add_signature(CANARY, key_id=signed.key_id, public_key=signed.public_key,
                           signature=signed.signature, actor="release-bot")  # fmt: skip
    rolled_back_then_promoted(registry)
    pack = pack_of(registry, "fraud@champion")  # an alias names the version it points at
    assert pack["subject"] == "fraud:2"
    package_ = pack["package"]
    assert package_["digest"] == registry.get(CANARY).digest
    assert package_["team"] == "risk"
    assert package_["aliases"] == ["champion"]
    assert "scikit-learn" in package_["environment"]["packages"]
    assert package_["signatures"][0]["valid"] is True
    history = pack["history"]
    assert (history["pushed"]["actor"], history["pushed"]["reason"]) == ("alice", "train run 2")
    [promotion] = history["promotions"]
    assert promotion["actor"] == "rollout-controller"
    assert [(m["alias"], m["to_version"]) for m in history["alias_moves"]] == [("champion", 2)]
    approvals = [(a["kind"], a["by"]) for a in pack["approvals"]]
    assert ("signature", "release-bot") in approvals
    assert ("pause command", "bob") in approvals
    assert ("resume command", "carol") in approvals
    assert approvals.count(("rollout started (to this version)", "alice")) == 2
    [contract] = pack["contracts"]
    assert (contract["endpoint"], contract["contract"]["slo"]["latency_ms"]) == (ENDPOINT, 50)
    spans = pack["production"]["slo"]
    assert spans[-1]["weight_percent"] == 100.0
    assert spans[-1]["to"] is None  # still serving
    assert [r["kind"] for r in pack["incidents"]["rollbacks"]] == ["rollback"]
    assert pack["audit"]["intact"]
    assert pack["audit"]["keyed"]
    assert pack["audit"]["events"] == len(registry.audit_events(limit=10_000))


def test_slo_figures_and_incidents_come_from_the_logs(either: Registry) -> None:
    registry = either
    rolled_back_then_promoted(registry)
    digest = registry.get(CANARY).digest
    now = datetime.now(UTC) + timedelta(seconds=120)
    with write_session(registry.engine) as session:
        session.execute(insert(SloIntervalRow).values(
            endpoint=ENDPOINT, at=now.timestamp(), span_s=10.0, avail_good=990, avail_total=1000,
            latency_good=900, latency_total=1000,
        ))  # fmt: skip
        # two openings of the breaker (answers 5 minutes apart), and a timeout
        answers = [(0, "circuit_open"), (5, "circuit_open"), (300, "circuit_open"),
                   (310, "timeout")]  # fmt: skip
        for i, (offset, reason) in enumerate(answers):
            session.execute(insert(PredictionRow).values(
                request_id=f"r{i}", at=now + timedelta(seconds=offset), endpoint=ENDPOINT,
                contract=ENDPOINT, contract_version=1, model_version=CANARY, digest=digest,
                route_kind="fallback", fallback_reason=reason, status=200, queue_ms=0.0,
                batch_ms=0.0, compute_ms=0.0, total_ms=float(10 + i),
            ))  # fmt: skip
        # without a fallback, the breaker's refusal is an error row
        session.execute(insert(PredictionRow).values(
            request_id="r9", at=now + timedelta(seconds=900), endpoint=ENDPOINT,
            contract=ENDPOINT, contract_version=1, model_version=CANARY, digest=digest,
            route_kind="stable", status=503, error_code="worker_failed", queue_ms=0.0,
            detail="the circuit of route 'fraud:2' is open", batch_ms=0.0, compute_ms=0.0,
            total_ms=0.5,
        ))  # fmt: skip
    pack = build_pack(registry.engine, CANARY, now=now + timedelta(seconds=1000))
    [span] = [s for s in pack["production"]["slo"] if s["to"] is None]
    assert (span["requests"], span["availability"], span["availability_met"]) == (1000, 0.99, True)
    assert (span["within_latency"], span["latency_met"]) == (0.9, False)  # p99 <= 50 ms missed
    figures = pack["production"]["requests"]
    assert (figures["requests_seen"], figures["errors"], figures["fallbacks"]) == (5, 1, 4)
    incidents = pack["incidents"]
    assert [(f["reason"], f["count"]) for f in incidents["fallbacks"]] == [
        ("circuit_open", 3), ("timeout", 1)
    ]  # fmt: skip
    assert [o["answers_while_open"] for o in incidents["breaker_openings"]] == [2, 1, 1]
    assert pack_of(registry, "fraud:1")["incidents"]["fallbacks"] == []


def test_the_digest_covers_the_canonical_content_and_any_edit_shows(registry: Registry) -> None:
    rolled_back_then_promoted(registry)
    pack = pack_of(registry)
    canonical = json.dumps({k: v for k, v in pack.items() if k != "digest"}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True, allow_nan=False)  # fmt: skip
    assert canonical_bytes(pack) == canonical.encode()
    import hashlib

    assert pack["digest"]["value"] == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert verify_pack(pack) == pack["digest"]["value"]
    # the file as written (indented) reads back to the same digest
    text = json.dumps(pack, indent=2)
    assert verify_pack(json.loads(text)) == content_digest(pack)
    # one byte changed anywhere in the content: a gate's reading
    edited = text.replace('"canary_error_rate": 0.05', '"canary_error_rate": 0.01', 1)
    assert edited != text
    with pytest.raises(IntegrityError, match="changed after it was made"):
        verify_pack(json.loads(edited))
    with pytest.raises(IntegrityError, match="no digest"):
        verify_pack({k: v for k, v in pack.items() if k != "digest"})


def test_a_tampered_audit_chain_is_reported_in_the_pack(registry: Registry) -> None:
    rolled_back_then_promoted(registry)
    seq = rollout_seqs(registry)[3]
    with write_session(registry.engine) as session:
        session.execute(update(AuditEventRow).where(AuditEventRow.seq == seq).values(reason="x"))
    pack = pack_of(registry)
    assert pack["audit"]["intact"] is False
    assert f"seq {seq}" in pack["audit"]["problem"]
    assert "BROKEN" in render_page(pack)


def test_the_page_is_self_contained_and_carries_the_pack(registry: Registry) -> None:
    rolled_back_then_promoted(registry)
    pack = pack_of(registry)
    page = render_page(pack)
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing to fetch
    assert "http://" not in page
    assert "https://" not in page
    assert pack["digest"]["value"] in page
    embedded = re.search(r'<script type="application/json" id="evidence">(.*)</script>', page, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1)) == pack
    for decision in (d for r in pack["rollouts"] for d in r["decisions"]):
        assert f"<td>{decision['seq']}</td>" in page


def test_bad_refs_are_named() -> None:
    assert parse_version_ref("fraud:12") == ("fraud", 12, None)
    assert parse_version_ref("fraud@champion") == ("fraud", None, "champion")
    assert pack_stem("fraud:12") == "evidence-fraud-12"
    for bad in ("fraud", "fraud:x", "Fraud:1", "fraud:1:2", ""):
        with pytest.raises(InvalidSpec) as info:
            parse_version_ref(bad)
        assert info.value.details[0]["field"] == "ref"


def test_unknown_versions_are_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound, match="fraud:9"):
        pack_of(registry, "fraud:9")
    with pytest.raises(NotFound, match="model 'nope'"):
        pack_of(registry, "nope:1")
    with pytest.raises(NotFound, match="fraud@gone"):
        pack_of(registry, "fraud@gone")


def test_outcomes_of_the_version_come_from_the_outcome_report(registry: Registry) -> None:
    from modelplane.observe.outcomes import Feedback, OutcomeStore
    from modelplane.store.schema import AnswerRow

    rolled_back_then_promoted(registry)
    rng = np.random.default_rng(1)
    feedback = []
    with write_session(registry.engine) as session:
        for version, noise in (("fraud:1", 0.1), ("fraud:2", 0.45)):
            for i in range(200):
                label = int(rng.integers(0, 2))
                score = float(np.clip(label + rng.normal(0, noise), 0.01, 0.99))
                request_id = f"{version}-{i}"
                session.execute(insert(AnswerRow).values(
                    request_id=request_id, at=time.time() - 60, endpoint=ENDPOINT,
                    model_version=version, route=version, route_kind="stable", rows=1,
                    feature_sets=None, outputs={"probability": [score]},
                ))  # fmt: skip
                if i < 150:  # a quarter never labelled
                    feedback.append(Feedback(request_id, float(label)))
    OutcomeStore(registry.engine).ingest(ENDPOINT, feedback)
    [endpoint] = pack_of(registry)["outcomes"]["endpoints"]
    assert endpoint["task"] == "classifier"
    mine = endpoint["version"]
    assert (mine["version"], mine["answered_rows"], mine["labelled_rows"]) == ("fraud:2", 200, 150)
    assert mine["coverage"] == pytest.approx(0.75)
    assert "auc" in mine["metrics"]
    [comparison] = endpoint["comparisons"]
    assert (comparison["baseline"], comparison["candidate"]) == ("fraud:1", "fraud:2")
    assert comparison["regressed"] is True  # made noisier on purpose
    assert any("fraud:2 is worse than fraud:1" in line for line in endpoint["alerts"])
    assert "fraud:2 is worse than fraud:1" in render_page(pack_of(registry))


def test_the_feature_sets_it_reads_come_with_their_definitions(registry: Registry) -> None:
    from modelplane.store.schema import FeatureLineageRow, ModelVersionRow

    feature_set = {
        "kind": "FeatureSet", "name": "customer", "version": 3, "team": "risk",
        "entity": {"name": "customer_id", "dtype": "string"},
        "features": [{"name": "spend", "dtype": "float64"}],
        "freshness": {"max_age_s": 3600.0},
    }  # fmt: skip
    ResourceStore(registry.engine).apply("FeatureSet", "customer:3", feature_set, actor="x")
    with write_session(registry.engine) as session:
        [row] = session.query(ModelVersionRow).filter_by(model_name="fraud", version=2)
        session.add(FeatureLineageRow(version_id=row.id, feature_set="customer",
                                      feature_set_version=3))  # fmt: skip
        session.add(FeatureLineageRow(version_id=row.id, feature_set="gone",
                                      feature_set_version=1))  # fmt: skip
    pack = pack_of(registry)
    by_name = {f["feature_set"]: f for f in pack["package"]["lineage"]["features"]}
    assert by_name["customer"]["definition"] == feature_set
    assert by_name["gone"]["definition"] is None
    page = render_page(pack)
    assert "customer_id:string" in page
    assert "spend:float64" in page
    assert "no longer in the store" in page

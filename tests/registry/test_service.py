"""The registry service, on SQLite and PostgreSQL: versions, aliases, lineage, audit."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from modelplane.errors import Conflict, IntegrityError, InvalidSpec, NotFound
from modelplane.registry.digest import seal
from modelplane.registry.service import NO_ALIAS, ModelVersion, Registry, open_registry
from modelplane.spec import DType, Environment, FieldSpec, Manifest, Signature
from modelplane.spec.manifest import DatasetRef, FeatureRef, Lineage, ModelFormat, Runtime
from modelplane.types import FakeClock

DATA_SHA = "ab" * 32


@dataclass(frozen=True)
class PackageBuilder:
    """Sealed package folders, built fluently: ``packages.named("x").reading("f", 2).build()``."""

    root: Path
    name: str = "fraud"
    payload: bytes = b"weights-1"
    features: tuple[FeatureRef, ...] = ()
    datasets: tuple[DatasetRef, ...] = field(default=())

    def named(self, name: str) -> PackageBuilder:
        return replace(self, name=name)

    def weights(self, payload: bytes) -> PackageBuilder:
        return replace(self, payload=payload)

    def reading(self, feature_set: str, version: int) -> PackageBuilder:
        ref = FeatureRef(feature_set=feature_set, version=version)
        return replace(self, features=(*self.features, ref))

    def trained_on(self, uri: str, sha256: str | None = None) -> PackageBuilder:
        return replace(self, datasets=(*self.datasets, DatasetRef(uri=uri, sha256=sha256)))

    def manifest(self) -> Manifest:
        return Manifest(
            name=self.name,
            runtime=Runtime.ONNX,
            format=ModelFormat.ONNX,
            model_file="model.onnx",
            signature=Signature(inputs=(FieldSpec(name="amount", dtype=DType.FLOAT64),)),
            environment=Environment(python="3.11", packages={"onnxruntime": "1.18.0"}),
            lineage=Lineage(
                features=self.features,
                training_data=self.datasets,
                metrics={"auc": 0.91},
                parameters={"depth": 6, "rate": 0.1},
            ),
        )

    def build(self) -> Path:
        folder = self.root / f"pkg-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(self.payload)
        seal(folder, self.manifest())
        return folder


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_740_000_000.0)


@pytest.fixture
def registry(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Registry]:
    registry = open_registry(database_url, str(tmp_path / "artifacts"), actor="ci", clock=clock)
    yield registry
    registry.close()


@pytest.fixture
def packages(tmp_path: Path) -> PackageBuilder:
    return PackageBuilder(tmp_path / "packages")


def test_push_registers_version_one(
    registry: Registry, packages: PackageBuilder, clock: FakeClock
) -> None:
    folder = packages.build()
    version = registry.push(folder, actor="alice", reason="first model")
    assert (version.name, version.version, version.ref) == ("fraud", 1, "fraud:1")
    assert version.runtime is Runtime.ONNX
    assert version.created_by == "alice"
    assert version.created_at == datetime.fromtimestamp(clock.wall(), UTC)
    assert version.manifest == packages.manifest().model_copy(
        update={"files": version.manifest.files}
    )
    assert registry.artifacts.has(version.digest)
    assert registry.get("fraud") == registry.get("fraud:1") == version
    (event,) = registry.audit_events()
    assert (event.actor, event.action, event.subject, event.reason) == (
        "alice",
        "model.push",
        "fraud:1",
        "first model",
    )
    assert event.after == {"digest": version.digest, "runtime": "onnx"}


def test_pushing_the_same_digest_again_returns_the_same_version(
    registry: Registry, packages: PackageBuilder
) -> None:
    first = registry.push(packages.build())
    again = registry.push(packages.build())
    second = registry.push(packages.weights(b"weights-2").build())
    assert again == first
    assert second.version == 2
    assert registry.get("fraud").version == 2
    assert len(registry.audit_events()) == 2


def test_versions_are_numbered_per_model(registry: Registry, packages: PackageBuilder) -> None:
    registry.push(packages.build())
    registry.push(packages.named("churn").build())
    registry.push(packages.weights(b"2").build())
    assert [v.ref for v in registry.list_versions("fraud")] == ["fraud:1", "fraud:2"]
    assert [v.ref for v in registry.list_versions("churn")] == ["churn:1"]


def test_missing_things_are_not_found(registry: Registry, packages: PackageBuilder) -> None:
    with pytest.raises(NotFound, match="model 'fraud' not found"):
        registry.get("fraud")
    with pytest.raises(InvalidSpec, match="'fraud:x': version must be a number"):
        registry.get("fraud:x")
    registry.push(packages.build())
    with pytest.raises(NotFound, match="model version 'fraud:2' not found"):
        registry.get("fraud:2")
    with pytest.raises(NotFound, match="alias 'fraud@champion' not found"):
        registry.get("fraud@champion")
    with pytest.raises(NotFound, match="model 'nope' not found"):
        registry.list_versions("nope")


def test_aliases_move_and_keep_history(
    registry: Registry, packages: PackageBuilder, clock: FakeClock
) -> None:
    registry.push(packages.build())
    registry.push(packages.weights(b"2").build())
    champion = registry.set_alias("fraud", "champion", 1, expected_current=NO_ALIAS)
    assert champion.aliases == ("champion",)
    clock.advance(60)
    moved = registry.set_alias("fraud", "champion", 2, expected_current=1, reason="better auc")
    assert moved.aliases == ("champion",)
    assert registry.get("fraud@champion").version == 2
    assert registry.get("fraud:1").aliases == ()
    registry.set_alias("fraud", "champion", 2)  # already there: nothing recorded
    history = registry.alias_history("fraud", "champion")
    assert [(h.from_version, h.to_version) for h in history] == [(None, 1), (1, 2)]
    assert history[1].reason == "better auc"
    assert history[1].at == datetime.fromtimestamp(clock.wall(), UTC)
    event = registry.audit_events(action="alias.set")[0]
    assert (event.subject, event.before, event.after) == (
        "fraud@champion",
        {"version": 1},
        {"version": 2},
    )
    registry.remove_alias("fraud", "champion", expected_current=2)
    with pytest.raises(NotFound):
        registry.get("fraud@champion")
    assert registry.alias_history("fraud")[-1].to_version is None


def test_a_stale_alias_move_conflicts_and_changes_nothing(
    registry: Registry, packages: PackageBuilder
) -> None:
    for payload in (b"1", b"2", b"3"):
        registry.push(packages.weights(payload).build())
    registry.set_alias("fraud", "champion", 1)
    registry.set_alias("fraud", "champion", 2, expected_current=1)
    events, history = len(registry.audit_events()), registry.alias_history("fraud")
    with pytest.raises(Conflict, match="points at 2, not 1"):
        registry.set_alias("fraud", "champion", 3, expected_current=1)
    with pytest.raises(Conflict, match="points at 2, not nothing"):
        registry.set_alias("fraud", "champion", 3, expected_current=NO_ALIAS)
    assert registry.get("fraud@champion").version == 2
    assert registry.alias_history("fraud") == history
    assert len(registry.audit_events()) == events


def test_concurrent_alias_moves_one_wins(registry: Registry, packages: PackageBuilder) -> None:
    for payload in (b"1", b"2", b"3"):
        registry.push(packages.weights(payload).build())
    registry.set_alias("fraud", "champion", 1)
    start = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def move(target: int) -> None:
        start.wait(timeout=10)
        try:
            registry.set_alias("fraud", "champion", target, expected_current=1)
            outcomes[target] = "moved"
        except Conflict:
            outcomes[target] = "conflict"

    threads = [threading.Thread(target=move, args=(t,)) for t in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes.values()) == ["conflict", "moved"]
    winner = next(t for t, outcome in outcomes.items() if outcome == "moved")
    assert registry.get("fraud@champion").version == winner
    assert [h.to_version for h in registry.alias_history("fraud")] == [1, winner]
    registry.verify_audit()


def test_aliases_need_an_existing_live_version(
    registry: Registry, packages: PackageBuilder
) -> None:
    registry.push(packages.build())
    with pytest.raises(NotFound):
        registry.set_alias("fraud", "champion", 9)
    with pytest.raises(NotFound):
        registry.set_alias("ghost", "champion", 1)
    with pytest.raises(InvalidSpec, match="not a valid alias"):
        registry.set_alias("fraud", "9lives", 1)


def test_archive_versions_and_models(registry: Registry, packages: PackageBuilder) -> None:
    registry.push(packages.build())
    registry.push(packages.weights(b"2").build())
    registry.set_alias("fraud", "champion", 2)
    with pytest.raises(Conflict, match="fraud@champion"):
        registry.archive("fraud:2")
    registry.archive("fraud:1", reason="leaky feature")
    registry.archive("fraud:1")  # already archived: nothing recorded
    assert registry.get("fraud:1").archived
    assert [v.version for v in registry.list_versions("fraud")] == [2]
    assert len(registry.list_versions("fraud", include_archived=True)) == 2
    with pytest.raises(Conflict, match="archived"):
        registry.set_alias("fraud", "challenger", 1)
    registry.archive("fraud")
    assert registry.list_models() == []
    assert [m.name for m in registry.list_models(include_archived=True)] == ["fraud"]
    with pytest.raises(Conflict, match="archived"):
        registry.push(packages.weights(b"3").build())
    with pytest.raises(InvalidSpec, match="not an alias"):
        registry.archive("fraud@champion")
    actions = [e.action for e in registry.audit_events()]
    assert actions == ["model.archive", "version.archive", "alias.set", "model.push", "model.push"]


def test_latest_skips_archived_versions(registry: Registry, packages: PackageBuilder) -> None:
    registry.push(packages.build())
    registry.push(packages.weights(b"2").build())
    registry.archive("fraud:2")
    assert registry.get("fraud").version == 1
    registry.archive("fraud:1")
    with pytest.raises(NotFound, match="no versions that are not archived"):
        registry.get("fraud")


def test_list_models_searches_names_literally(registry: Registry, packages: PackageBuilder) -> None:
    for name in ("fraud", "fraud_eu", "fraudxeu", "churn"):
        registry.push(packages.named(name).build())
    registry.set_alias("fraud", "champion", 1)
    assert [m.name for m in registry.list_models()] == ["churn", "fraud", "fraud_eu", "fraudxeu"]
    assert [m.name for m in registry.list_models(search="d_e")] == ["fraud_eu"]
    assert [m.name for m in registry.list_models(search="%")] == []
    (fraud,) = registry.list_models(search="FRAUD")[:1]
    assert (fraud.latest_version, fraud.version_count, dict(fraud.aliases)) == (
        1,
        1,
        {"champion": 1},
    )


def refs(versions: list[ModelVersion]) -> list[str]:
    return [v.ref for v in versions]


def test_lineage_queries(registry: Registry, packages: PackageBuilder) -> None:
    a = registry.push(packages.reading("customer", 1).trained_on("s3://d/2024", DATA_SHA).build())
    b = registry.push(packages.weights(b"2").reading("customer", 2).reading("customer", 2).build())
    c = registry.push(
        packages.named("churn").reading("account", 1).trained_on("s3://d/2024").build()
    )
    registry.archive("fraud:1")
    assert refs(registry.versions_reading_feature_set("customer")) == [a.ref, b.ref]
    assert refs(registry.versions_reading_feature_set("customer", 2)) == [b.ref]
    assert refs(registry.versions_reading_feature_set("nothing")) == []
    assert refs(registry.versions_trained_on("s3://d/2024")) == [c.ref, a.ref]
    assert refs(registry.versions_trained_on(DATA_SHA)) == [a.ref]
    assert refs(registry.versions_trained_on(f"sha256:{DATA_SHA}")) == [a.ref]
    assert registry.versions_trained_on(DATA_SHA)[0].archived


@pytest.mark.parametrize(
    ("damage", "error", "named"),
    [
        ("edited manifest", IntegrityError, "modelplane.yaml"),
        ("truncated manifest", InvalidSpec, "modelplane.yaml: not valid YAML"),
        ("missing file", IntegrityError, "model.onnx"),
        ("extra file", IntegrityError, "notes.txt"),
    ],
)
def test_a_damaged_package_registers_nothing(
    registry: Registry,
    packages: PackageBuilder,
    tmp_path: Path,
    damage: str,
    error: type[Exception],
    named: str,
) -> None:
    registry.push(packages.named("kept").build())
    before = (registry.list_models(), registry.audit_events())
    folder = packages.build()
    manifest = folder / "modelplane.yaml"
    if damage == "edited manifest":  # same meaning, but not what was sealed
        manifest.write_text(manifest.read_text().replace("auc: 0.91", "auc: 0.910"))
    elif damage == "truncated manifest":
        manifest.write_text(manifest.read_text().partition("files:")[0] + "files:\n- {path: ")
    elif damage == "missing file":
        (folder / "model.onnx").unlink()
    else:
        (folder / "notes.txt").write_text("not sealed")
    with pytest.raises(error) as info:
        registry.push(folder)
    assert named in str(info.value)
    assert (registry.list_models(), registry.audit_events()) == before
    assert len(list((tmp_path / "artifacts" / "sha256").iterdir())) == 1
    assert list((tmp_path / "artifacts" / "tmp").iterdir()) == []
    registry.verify_audit()


def test_a_folder_that_is_no_package_is_invalid(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match=r"no modelplane\.yaml"):
        registry.push(tmp_path)
    with pytest.raises(InvalidSpec, match="actor"):
        Registry(registry.engine, registry.artifacts, actor=" ")


def test_manifest_and_fetch_are_verified(
    registry: Registry, packages: PackageBuilder, tmp_path: Path
) -> None:
    version = registry.push(packages.build())
    assert registry.load_manifest("fraud:1") == version.manifest
    out = registry.fetch("fraud:1", tmp_path / "out")
    assert (out / "model.onnx").read_bytes() == b"weights-1"
    with registry.engine.begin() as conn:
        rows = conn.execute(text("SELECT id, manifest FROM model_versions")).all()
        stored = rows[0].manifest  # psycopg decodes json; sqlite gives the text
        forged = dict(stored if isinstance(stored, dict) else json.loads(stored))
        forged["description"] = "forged"
        conn.execute(text("UPDATE model_versions SET manifest = :m"), {"m": json.dumps(forged)})
    with pytest.raises(IntegrityError, match="does not match"):
        registry.load_manifest("fraud:1")


def test_every_mutation_is_audited_and_the_chain_verifies(
    registry: Registry, packages: PackageBuilder
) -> None:
    registry.push(packages.build())
    registry.push(packages.weights(b"2").build())
    registry.set_alias("fraud", "champion", 1)
    registry.set_alias("fraud", "champion", 2)
    registry.remove_alias("fraud", "champion")
    registry.archive("fraud:1")
    events = registry.audit_events()
    assert [e.seq for e in events] == [6, 5, 4, 3, 2, 1]
    assert {e.actor for e in events} == {"ci"}
    registry.verify_audit()
    with registry.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 4"))
    with pytest.raises(IntegrityError, match="seq 4"):
        registry.verify_audit()

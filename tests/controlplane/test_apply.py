from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelplane.controlplane.apply import Applier, load_documents
from modelplane.errors import Conflict, Incompatible, InvalidSpec, NotFound
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry
from modelplane.store.resources import ResourceStore

pd = pytest.importorskip("pandas")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="alice")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(40, 2)), columns=["amount", "age"])
    model = LogisticRegression().fit(frame, (frame["amount"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    registry.push(built.path)
    registry.set_alias("fraud", "champion", 1)
    yield registry
    registry.close()


def endpoint(
    version: int = 1, outputs: list[dict[str, Any]] | None = None, route: str = "fraud@champion"
) -> dict[str, Any]:
    return {
        "kind": "Endpoint",
        "name": "fraud-score",
        "team": "risk",
        "contract": {
            "name": "fraud-score",
            "version": version,
            "inputs": [{"name": "amount", "dtype": "float64"}, {"name": "age", "dtype": "float64"}],
            "outputs": outputs if outputs is not None else [{"name": "label", "dtype": "int64"}],
        },
        "routes": [{"model": route}],
    }


def applier(registry: Registry) -> Applier:
    return Applier(registry, ResourceStore(registry.engine), actor="alice")


def test_apply_pins_aliases_and_is_idempotent(registry: Registry) -> None:
    [created] = applier(registry).apply_all([endpoint()], reason="launch")
    assert (created.outcome, created.generation) == ("created", 1)
    assert created.resolved["fraud@champion"]["ref"] == "fraud:1"
    stored = ResourceStore(registry.engine).get("Endpoint", "fraud-score")
    assert stored.spec["pins"] == {"fraud@champion": "fraud:1"}
    assert stored.status is None  # status is written by controllers only
    [again] = applier(registry).apply_all([endpoint()])
    assert again.outcome == "unchanged"


def test_moving_an_alias_changes_the_endpoint_only_when_applied_again(
    registry: Registry, tmp_path: Path
) -> None:
    applier(registry).apply_all([endpoint()])
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(40, 2)), columns=["amount", "age"])
    model = LogisticRegression(C=0.1).fit(frame, (frame["age"] > 0).astype(int))
    registry.push(package(model, name="fraud", output_dir=tmp_path / "p2", sample_input=frame).path)
    registry.set_alias("fraud", "champion", 2)
    stored = ResourceStore(registry.engine).get("Endpoint", "fraud-score")
    assert stored.spec["pins"] == {"fraud@champion": "fraud:1"}
    [again] = applier(registry).apply_all([endpoint()])
    assert (again.outcome, again.generation) == ("configured", 2)
    stored = ResourceStore(registry.engine).get("Endpoint", "fraud-score")
    assert stored.spec["pins"] == {"fraud@champion": "fraud:2"}


def test_unknown_model_names_the_route(registry: Registry) -> None:
    with pytest.raises(NotFound) as info:
        applier(registry).apply_all([endpoint(route="fraud:9")])
    assert info.value.details[0]["field"] == "routes[0].model"


def test_signature_must_satisfy_the_contract(registry: Registry) -> None:
    outputs = [{"name": "churn", "dtype": "int64"}]
    with pytest.raises(Incompatible) as info:
        applier(registry).apply_all([endpoint(outputs=outputs)])
    assert any("churn" in d["field"] for d in info.value.details)
    assert ResourceStore(registry.engine).list("Endpoint") == []


def served(registry: Registry) -> None:
    """What the endpoint controller records once callers got answers."""
    ResourceStore(registry.engine).set_status("Endpoint", "fraud-score", {"served_ever": True})


def test_contract_changes_need_a_new_compatible_version(registry: Registry) -> None:
    apply = applier(registry).apply_all
    apply([endpoint()])
    served(registry)
    more: list[dict[str, Any]] = [
        {"name": "label", "dtype": "int64"},
        {"name": "probabilities", "dtype": "float64", "shape": [-1, 2]},
    ]
    with pytest.raises(Incompatible, match="version must go above 1"):
        apply([endpoint(version=1, outputs=more)])
    [added] = apply([endpoint(version=2, outputs=more)])
    assert added.generation == 2
    fewer = [{"name": "probabilities", "dtype": "float64", "shape": [-1, 2]}]
    with pytest.raises(Incompatible, match="breaking"):
        apply([endpoint(version=3, outputs=fewer)])
    [forced] = applier(registry).apply_all(
        [endpoint(version=3, outputs=fewer)], allow_breaking=True
    )
    assert forced.generation == 3


def test_a_contract_that_never_served_may_change_without_a_new_version(
    registry: Registry,
) -> None:
    apply = applier(registry).apply_all
    apply([endpoint()])
    fewer = [{"name": "probabilities", "dtype": "float64", "shape": [-1, 2]}]
    [changed] = apply([endpoint(version=1, outputs=fewer)])
    assert changed.generation == 2


def test_a_static_fallback_that_does_not_fit_the_contract_is_refused_at_apply(
    registry: Registry,
) -> None:
    document = endpoint(
        outputs=[
            {"name": "label", "dtype": "int64"},
            {"name": "probabilities", "dtype": "float64", "shape": [-1, 2]},
        ]
    )
    document["contract"]["fallback"] = {"kind": "static", "value": {"label": 0}}
    with pytest.raises(InvalidSpec) as info:
        applier(registry).apply_all([document])
    assert info.value.details[0]["field"] == "contract.fallback.value.probabilities"
    assert "contract.fallback" in info.value.message
    assert ResourceStore(registry.engine).list("Endpoint") == []
    document["contract"]["fallback"]["value"] = {"label": 0, "probabilities": [1.0, 0.0]}
    [created] = applier(registry).apply_all([document])
    assert created.outcome == "created"


def test_a_bad_document_records_nothing(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "kind: Policy\nname: default\nplacement: {strategy: fgd}\n---\nkind: Endpoint\nname: x\n"
    )
    with pytest.raises(InvalidSpec, match="team"):
        applier(registry).apply_all(load_documents(path))
    assert ResourceStore(registry.engine).list("Policy") == []


def test_unknown_kind(registry: Registry) -> None:
    with pytest.raises(InvalidSpec, match="kind"):
        applier(registry).apply_all([{"kind": "Gadget", "name": "g"}])


def test_a_model_trained_on_another_feature_set_version_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    from modelplane.spec.manifest import FeatureRef, Lineage

    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(40, 2)), columns=["amount", "age"])
    model = LogisticRegression().fit(frame, (frame["amount"] > 0).astype(int))
    lineage = Lineage(features=(FeatureRef(feature_set="tx", version=1),))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg2", sample_input=frame.head(),
                    lineage=lineage)  # fmt: skip
    registry.push(built.path)
    bound = endpoint(route="fraud:2")
    bound["features"] = [{"feature_set": "tx:2", "entity_key": "customer_id"}]
    with pytest.raises(Incompatible) as info:
        applier(registry).apply_all([bound])
    assert "trained on feature set tx:1" in info.value.message
    assert "binds tx:2" in info.value.message
    assert info.value.details[0]["field"] == "features[0].feature_set"
    bound["features"][0]["compatible_versions"] = [1]
    [applied] = applier(registry).apply_all([bound])
    assert applied.outcome == "created"


GOLD_ONLY = {"kind": "Policy", "name": "default", "tiers": [{"name": "gold", "priority": 100}]}


def test_a_policy_may_not_drop_a_tier_in_use(registry: Registry) -> None:
    applier(registry).apply_all([endpoint()])  # tier standard, under the built-in policy
    with pytest.raises(Conflict, match=r"no tier for endpoint fraud-score \(standard\)"):
        applier(registry).apply_all([GOLD_ONLY])
    assert ResourceStore(registry.engine).list("Policy") == []
    # moved in the same apply, it may
    applier(registry).apply_all([GOLD_ONLY, {**endpoint(), "tier": "gold"}])


def test_an_endpoint_whose_tier_the_policy_lacks_is_still_re_applied(
    registry: Registry,
) -> None:
    """A rollout's traffic steps and a rollback re-apply the endpoint: a tier checked when
    it was set is not checked again, so a policy stored since (before tiers in use were
    checked) cannot block a rollback."""
    applier(registry).apply_all([endpoint()])  # tier standard, under the built-in policy
    resources = ResourceStore(registry.engine)
    resources.apply("Policy", "default", GOLD_ONLY, actor="alice")
    [again] = applier(registry).apply_all([{**endpoint(), "replicas": 2}])
    assert again.outcome == "configured"
    moved = {**endpoint(), "tier": "silver"}
    with pytest.raises(InvalidSpec, match=r"tier: 'silver' is not a tier of policy default"):
        applier(registry).apply_all([moved])


def test_a_policy_and_what_uses_its_tiers_apply_together(registry: Registry) -> None:
    """Checked against the policy in the same apply, which is the one in force once they
    are recorded."""
    results = applier(registry).apply_all([GOLD_ONLY, {**endpoint(), "tier": "gold"}])
    assert [r.kind for r in results] == ["Policy", "Endpoint"]
    with pytest.raises(InvalidSpec, match=r"tier: 'standard' is not a tier of policy default"):
        applier(registry).apply_all([{**endpoint(), "name": "other"}])

"""The request-time feature join on the memory store: request values win, each policy,
one read per batch, the contract's dtypes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from tests.features import kit as fkit

from modelplane.dataplane.features_join import FeatureJoin, compile_join
from modelplane.dataplane.metrics import FeatureMetrics
from modelplane.errors import HTTP_STATUS, ContractViolation
from modelplane.features import FeaturesUnavailable, Lookup, MemoryOnlineStore
from modelplane.features.base import EntityKey
from modelplane.observe.records import FeatureEvidence, RequestTrace
from modelplane.spec.contract import Contract
from modelplane.spec.endpoint import Endpoint, FeatureBinding, Route
from modelplane.spec.featureset import FeatureSet
from modelplane.spec.fields import FieldSpec


def _featureset() -> FeatureSet:
    builder = fkit.FeatureSetBuilder("tx", 1).max_age(60.0)
    builder.feature("amount", "float64", default=0.5).feature("count", "int64", default=7)
    return builder.feature("label", "string").build()


def _join(policy: str = "fail", features: Sequence[str] = ()) -> tuple[FeatureJoin, FeatureMetrics]:
    contract = Contract(
        name="c",
        inputs=(
            FieldSpec(name="amount", dtype="float32"),
            FieldSpec(name="count", dtype="int32", shape=(-1, 1)),
            FieldSpec(name="other", dtype="float32"),
        ),
    )
    binding = FeatureBinding(
        feature_set="tx:1", entity_key="customer_id", policy=policy, features=tuple(features)
    )
    endpoint = Endpoint(
        name="e", team="t", contract=contract, routes=(Route(model="m:1"),), features=(binding,)
    )
    metrics = FeatureMetrics()
    join = compile_join(endpoint, {"tx:1": _featureset()}, metrics)
    assert join is not None
    return join, metrics


class CountingStore(MemoryOnlineStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[EntityKey]] = []

    def read(
        self,
        set_name: str,
        version: int,
        keys: Sequence[EntityKey],
        features: Sequence[str],
        now: float,
    ) -> list[Lookup]:
        self.reads.append(list(keys))
        return super().read(set_name, version, keys, features, now)


def _store(age_s: float = 1.0) -> CountingStore:
    store = CountingStore()
    at = time.time() - age_s
    store.write("tx", 1, [("a", at, {"amount": 1.5, "count": 3}), ("b", at, {"amount": 2.5})])
    store.write("tx", 1, [("old", at - 3600, {"amount": 9.0, "count": 9})])
    return store


def _inputs(*keys: str, **extra: Any) -> dict[str, Any]:
    ids = np.array(list(keys), dtype=object)
    return {"customer_id": ids, "other": np.zeros(len(keys), np.float32), **extra}


def _ev(trace: RequestTrace) -> FeatureEvidence:
    assert trace.features is not None
    return trace.features


def run(join: FeatureJoin, inputs: dict[str, Any], store: Any, trace: Any = None) -> Any:
    return asyncio.run(join.join(inputs, store, trace))


def test_a_batch_is_read_once_and_takes_the_contract_dtypes() -> None:
    join, metrics = _join()
    store = _store()
    trace = RequestTrace()
    joined, missing = run(join, _inputs("a", "a"), store, trace)
    assert missing is None
    assert store.reads == [["a", "a"]]
    assert joined["amount"].dtype == np.float32
    assert joined["amount"].tolist() == [1.5, 1.5]
    assert joined["count"].dtype == np.int32
    assert joined["count"].shape == (2, 1)
    assert "customer_id" not in joined  # only for the lookup: the contract does not take it
    assert _ev(trace).sets == ("tx:1",)
    age = _ev(trace).ages_s["tx:1/amount"]
    assert age is not None
    assert 0.5 < age < 30
    assert metrics.hits == {"tx:1": 2}
    assert sum(metrics.staleness["tx:1"].counts) == 2


def test_request_values_win_and_are_not_read() -> None:
    join, _ = _join()
    store = _store()
    trace = RequestTrace()
    mine = np.array([42.0], np.float32)
    joined, _ = run(join, _inputs("a", amount=mine), store, trace)
    assert joined["amount"] is mine
    assert joined["count"].tolist() == [[3]]
    assert _ev(trace).from_request == ("amount",)
    both = {"amount": mine, "count": np.array([[1]], np.int32)}
    store.reads.clear()
    run(join, _inputs("a", **both), store)
    assert store.reads == []


def test_fail_names_the_feature_and_its_age() -> None:
    join, metrics = _join("fail")
    with pytest.raises(FeaturesUnavailable) as caught:
        run(join, _inputs("a", "old"), _store())
    assert caught.value.code == "features_unavailable"
    assert HTTP_STATUS[caught.value.code] == 422
    assert "stale for key 'old'" in caught.value.message
    assert caught.value.details[0]["age_s"] > 3600
    assert metrics.violations[("tx:1", "amount")] == 1


def test_default_fills_declared_defaults_and_says_so() -> None:
    join, _ = _join("default")
    trace = RequestTrace()
    joined, missing = run(join, _inputs("b", "nobody"), _store(), trace)
    assert missing is None
    assert joined["amount"].tolist() == [2.5, 0.5]
    assert joined["count"].tolist() == [[7], [7]]
    assert set(_ev(trace).defaulted) == {"amount", "count"}
    assert _ev(trace).ages_s["tx:1/count"] is None


def test_fallback_returns_why_instead_of_columns() -> None:
    join, metrics = _join("fallback")
    joined, missing = run(join, _inputs("old"), _store())
    assert isinstance(missing, FeaturesUnavailable)
    assert "stale" in missing.message
    assert "amount" not in joined
    assert metrics.misses == {"tx:1": 0}


def test_a_bad_entity_key_or_no_store_is_named() -> None:
    join, _ = _join()
    with pytest.raises(ContractViolation, match="customer_id"):
        run(join, {"other": np.zeros(1, np.float32)}, _store())
    with pytest.raises(Exception, match="no online store"):
        run(join, _inputs("a"), None)


def test_endpoints_without_bindings_compile_to_nothing() -> None:
    contract = Contract(name="c", inputs=(FieldSpec(name="x", dtype="float32"),))
    endpoint = Endpoint(name="e", team="t", contract=contract, routes=(Route(model="m:1"),))
    assert compile_join(endpoint, {}, FeatureMetrics()) is None


def test_a_binding_must_name_contract_inputs() -> None:
    with pytest.raises(ValueError, match="not an input of the contract"):
        _join(features=("label",))

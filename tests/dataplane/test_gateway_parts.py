"""The gateway's pure parts: fast input checks, static fallbacks, error mapping, metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelplane.core.validate import CompiledContract
from modelplane.dataplane.fallback import StaticFallback
from modelplane.dataplane.fastcheck import PlainInputs
from modelplane.dataplane.http import error_body, error_headers, status_of
from modelplane.dataplane.loader import load_package
from modelplane.dataplane.metrics import GatewayMetrics
from modelplane.dataplane.openapi import openapi_document
from modelplane.errors import ContractViolation, IntegrityError, InvalidSpec, NotFound, Overloaded
from modelplane.registry.build import package
from modelplane.spec.fields import FieldSpec, Range

FIELDS = (
    FieldSpec(name="x", dtype="float32", shape=(-1, 3)),
    FieldSpec(name="n", dtype="int64", shape=(-1,)),
    FieldSpec(name="b", dtype="bool", shape=(-1,)),
)
PLAIN = PlainInputs.build(FIELDS)
FULL = CompiledContract(FIELDS)

arrays = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    ),
    st.just(np.array(["a"], dtype=object)),
)


@settings(max_examples=300, deadline=None)
@given(x=arrays, n=arrays, b=arrays, extra=st.booleans())
def test_fast_path_never_accepts_what_full_validation_rejects(
    x: Any, n: Any, b: Any, extra: bool
) -> None:
    assert PLAIN is not None
    inputs = {"x": x, "n": n, "b": b}
    if extra:
        inputs["z"] = n
    accepted = PLAIN.accept(inputs)
    if accepted is not None:
        assert FULL.validate(inputs) == []
        coerced = FULL.coerce(inputs)
        for name, array in accepted.items():
            np.testing.assert_array_equal(array, coerced[name])
            assert array.dtype == coerced[name].dtype


def test_fast_path_takes_the_common_request() -> None:
    assert PLAIN is not None
    good: dict[str, Any] = {
        "x": np.ones((2, 3), np.float32),
        "n": np.ones(2, np.int64),
        "b": np.ones(2, bool),
    }
    assert PLAIN.accept(good) is not None
    nan = dict(good, x=np.full((2, 3), np.nan, np.float32))
    assert PLAIN.accept(nan) is None
    assert PLAIN.accept(dict(good, n=np.ones(3, np.int64))) is None


def test_fast_path_only_for_plain_contracts() -> None:
    ranged = FieldSpec(name="n", dtype="int64", range=Range(min=0))
    assert PlainInputs.build((ranged,)) is None
    assert PlainInputs.build((FieldSpec(name="s", dtype="string"),)) is None
    assert PlainInputs.build((FieldSpec(name="n", dtype="int64", required=False),)) is None


OUTPUTS = (
    FieldSpec(name="label", dtype="int64"),
    FieldSpec(name="probabilities", dtype="float32", shape=(-1, 2)),
)


def test_static_fallback_by_output_name() -> None:
    fallback = StaticFallback({"label": 0, "probabilities": [0.5, 0.5]}, OUTPUTS)
    out = fallback.outputs(3)
    np.testing.assert_array_equal(out["label"], [0, 0, 0])
    assert out["probabilities"].shape == (3, 2)
    assert out["probabilities"].dtype == np.float32


def test_static_fallback_for_a_single_output_and_none() -> None:
    single = StaticFallback(0.0, (FieldSpec(name="score", dtype="float64"),))
    np.testing.assert_array_equal(single.outputs(2)["score"], [0.0, 0.0])
    free = StaticFallback(1, ())
    np.testing.assert_array_equal(free.outputs(2)["prediction"], [1, 1])


@pytest.mark.parametrize(
    "value",
    [
        {"label": 0},
        {"label": 0, "probabilities": [1.0]},
        0,
        {"label": "x", "probabilities": [1, 0]},
    ],
)
def test_static_fallback_that_does_not_fit_is_refused(value: Any) -> None:
    with pytest.raises(InvalidSpec):
        StaticFallback(value, OUTPUTS)


def test_error_mapping() -> None:
    assert status_of(ContractViolation("bad")) == 400
    assert status_of(NotFound("gone")) == 404
    overloaded = Overloaded("full", retry_after_s=0.01)
    assert status_of(overloaded) == 429
    assert error_headers(overloaded) == [(b"retry-after", b"1")]
    assert error_body(NotFound("gone"), v2=True) == b'{"error":"gone"}'
    assert b'"code":"not_found"' in error_body(NotFound("gone"), v2=False)


def test_metrics_render_each_family() -> None:
    metrics = GatewayMetrics()
    metrics.add_source("e", "m:1", lambda: 5, lambda: 2)
    metrics.request("e", "m:1", "m:1", 200, 0.003)
    metrics.error("e", "overloaded")
    metrics.fallback("e", "timeout")
    metrics.batch("m:1", 7)
    text = metrics.render().decode()
    labels = 'code="200",endpoint="e",model_version="m:1",route="m:1"'
    assert f"modelplane_gateway_requests_total{{{labels}}} 1.0" in text
    assert 'modelplane_gateway_queue_rows{endpoint="e",model_version="m:1"} 5.0' in text
    assert 'modelplane_gateway_worker_restarts_total{endpoint="e",model_version="m:1"} 2.0' in text
    assert 'modelplane_gateway_batch_rows_bucket{le="8.0",model_version="m:1"} 1.0' in text
    assert 'modelplane_gateway_fallbacks_total{endpoint="e",reason="timeout"} 1.0' in text


def test_openapi_lists_every_route() -> None:
    paths = set(openapi_document("t", "0")["paths"])
    assert paths == {
        "/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{name}",
        "/v2/models/{name}/ready", "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}", "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/versions/{version}/infer", "/v1/endpoints",
        "/v1/endpoints/{name}:predict", "/v1/endpoints/{name}:feedback", "/metrics",
        "/openapi.json",
    }  # fmt: skip


class Doubler:
    def load(self, path: Any) -> None:
        pass

    def predict(self, inputs: Any) -> dict[str, Any]:
        return {"y": inputs["x"] * 2}


def test_loader_verifies_before_loading(tmp_path: Path) -> None:
    built = package(Doubler(), name="doubler", output_dir=tmp_path / "pkg", runtime="python",
                    sample_input={"x": np.ones((2, 2), np.float32)})  # fmt: skip
    model = load_package(str(built.path), built.digest)
    np.testing.assert_array_equal(model.predict({"x": np.ones((1, 2), np.float32)})["y"], [[2, 2]])
    with pytest.raises(IntegrityError):
        load_package(str(built.path), "sha256:" + "0" * 64)
    tampered = tmp_path / "tampered"
    shutil.copytree(built.path, tampered)
    (tampered / "model.py").write_text("raise SystemExit('not the reviewed code')\n")
    with pytest.raises(IntegrityError):
        load_package(str(tampered))

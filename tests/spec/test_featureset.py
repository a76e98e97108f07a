"""The FeatureSet spec: validation naming the field, dtypes of defaults, YAML round trip."""

from __future__ import annotations

import math
from typing import Any

import pytest

from modelplane.errors import InvalidSpec
from modelplane.spec.dtypes import DType
from modelplane.spec.featureset import FeatureSet, check_value
from modelplane.spec.io import dump_yaml, load_yaml, parse

YAML = """
api_version: modelplane/v1
kind: FeatureSet
name: transactions
version: 3
team: risk
entity: {name: customer_id, dtype: int64}
freshness: {max_age_s: 300}
source: kafka topic tx.v2, aggregated every minute
features:
  - {name: amount_sum_1h, dtype: float64, default: 0.0}
  - {name: country, dtype: string, max_age_s: 86400}
  - {name: tx_count, dtype: INT32, default: 0}
"""


def test_yaml_round_trip_and_lookups() -> None:
    spec = load_yaml(FeatureSet, YAML)
    assert spec.ref == "transactions:3"
    assert spec.entity.dtype is DType.INT64
    assert spec.feature_names == ("amount_sum_1h", "country", "tx_count")
    assert spec.max_age_s("country") == 86400
    assert spec.max_age_s("tx_count") == 300
    assert load_yaml(FeatureSet, dump_yaml(spec)) == spec


def _data(**changes: Any) -> dict[str, Any]:
    base = load_yaml(FeatureSet, YAML).model_dump(mode="json")
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"version": 0}, "version"),
        ({"kind": "Endpoint"}, "kind"),
        ({"entity": {"name": "id", "dtype": "float64"}}, "entity"),
        ({"features": []}, "features"),
        ({"features": [{"name": "__ts", "dtype": "int64"}]}, "features[0].name"),
        ({"features": [{"name": "a", "dtype": "int8", "default": 300}]}, "features[0]"),
        ({"features": [{"name": "a", "dtype": "int8", "max_age_s": 0}]}, "features[0].max_age_s"),
        ({"features": [{"name": "a", "dtype": "int8"}, {"name": "a", "dtype": "int8"}]}, "(root)"),
        ({"features": [{"name": "customer_id", "dtype": "int8"}]}, "(root)"),
        ({"freshness": {"max_age_s": -1}}, "freshness.max_age_s"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_specs_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse(FeatureSet, _data(**changes))
    assert caught.value.details[0]["field"] == field


@pytest.mark.parametrize(
    ("dtype", "value", "expected"),
    [
        (DType.FLOAT32, 3, 3.0),
        (DType.INT8, -128, -128),
        (DType.UINT64, 2**64 - 1, 2**64 - 1),
        (DType.BOOL, True, True),
        (DType.STRING, "x", "x"),
    ],
)
def test_check_value_accepts(dtype: DType, value: Any, expected: Any) -> None:
    assert check_value(dtype, value) == expected
    assert type(check_value(dtype, value)) is type(expected)


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        (DType.INT8, 128),
        (DType.UINT8, -1),
        (DType.INT64, 1.0),
        (DType.INT64, True),
        (DType.FLOAT64, math.nan),
        (DType.FLOAT16, 1e6),
        (DType.BOOL, 1),
        (DType.STRING, 1),
        (DType.FLOAT64, "1.0"),
    ],
)
def test_check_value_refuses(dtype: DType, value: Any) -> None:
    with pytest.raises(ValueError):
        check_value(dtype, value)

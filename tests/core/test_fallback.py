"""Static fallbacks are checked against the contract's outputs before anything serves."""

from __future__ import annotations

import numpy as np
import pytest

from modelplane.core.fallback import StaticFallback, check_fallback
from modelplane.errors import InvalidSpec
from modelplane.spec.contract import Fallback, FallbackKind
from modelplane.spec.fields import FieldSpec

LABEL = FieldSpec.model_validate({"name": "label", "dtype": "int64"})
PROBS = FieldSpec.model_validate({"name": "probabilities", "dtype": "float64", "shape": [-1, 2]})


def static(value: object) -> Fallback:
    return Fallback(kind=FallbackKind.STATIC, value=value)


def test_a_value_for_every_output_fits() -> None:
    check_fallback(static({"label": 0, "probabilities": [1.0, 0.0]}), (LABEL, PROBS), field="f")
    rows = StaticFallback({"label": 0, "probabilities": [1.0, 0.0]}, (LABEL, PROBS)).outputs(3)
    np.testing.assert_array_equal(rows["label"], [0, 0, 0])
    assert rows["probabilities"].shape == (3, 2)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"label": 0}, "contract.fallback.value.probabilities"),
        ({"label": "x", "probabilities": [1.0, 0.0]}, "contract.fallback.value.label"),
        ({"label": 0, "probabilities": [1.0]}, "contract.fallback.value.probabilities"),
    ],
)
def test_a_value_that_cannot_be_served_names_the_field(value: object, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        check_fallback(static(value), (LABEL, PROBS), field="contract.fallback")
    assert info.value.details[0]["field"] == field
    assert info.value.message.startswith("contract.fallback: ")


def test_other_kinds_are_not_checked_here() -> None:
    check_fallback(Fallback(), (LABEL,), field="fallback")

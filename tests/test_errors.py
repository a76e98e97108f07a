from __future__ import annotations

import pytest

from modelplane import errors
from modelplane.errors import (
    ContractViolation,
    InvalidSpec,
    MissingExtra,
    ModelplaneError,
    NotFound,
    Overloaded,
)


def test_codes_are_stable_and_unique() -> None:
    classes = [
        getattr(errors, name)
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), ModelplaneError)
    ]
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    assert NotFound.code == "not_found"
    assert ContractViolation.code == "contract_violation"


def test_errors_also_are_the_builtin_they_resemble() -> None:
    with pytest.raises(LookupError):
        raise NotFound("model 'x' not found")
    with pytest.raises(ValueError, match="bad"):
        raise ContractViolation("bad")
    assert isinstance(MissingExtra("torch", "torch"), ImportError)


def test_body_and_text_carry_every_detail() -> None:
    exc = InvalidSpec(
        "invalid contract", details=[{"field": "inputs[0].dtype", "problem": "unknown"}]
    )
    assert exc.to_dict() == {
        "code": "invalid_spec",
        "message": "invalid contract",
        "details": [{"field": "inputs[0].dtype", "problem": "unknown"}],
    }
    assert "inputs[0].dtype: unknown" in str(exc)


def test_overloaded_says_when_to_retry() -> None:
    assert Overloaded("queue full", retry_after_s=0.5).retry_after_s == 0.5


def test_missing_extra_names_the_extra() -> None:
    assert "pip install 'modelplane[torch]'" in str(MissingExtra("torch", "torch"))

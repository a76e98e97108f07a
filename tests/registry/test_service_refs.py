"""Reference parsing: pure, so every spelling is checked without a database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.errors import InvalidSpec
from modelplane.registry.refs import Ref, parse_ref


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("fraud", Ref("fraud")),
        ("fraud:7", Ref("fraud", version=7)),
        ("fraud-eu.v2:12", Ref("fraud-eu.v2", version=12)),
        ("fraud@champion", Ref("fraud", alias="champion")),
        ("fraud@canary-2", Ref("fraud", alias="canary-2")),
    ],
)
def test_good_references(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fraud:x", "'fraud:x': version must be a number"),
        ("fraud:", "'fraud:': version must be a number"),
        ("fraud:-1", "'fraud:-1': version must be a number"),
        ("fraud:٣", "'fraud:٣': version must be a number"),
        ("fraud:0", "'fraud:0': version must be 1 or more"),
        ("fraud@7", "'fraud@7': '7' is not a valid alias"),
        ("fraud@", "'fraud@': '' is not a valid alias"),
        ("fraud@Champion", "'fraud@Champion': 'Champion' is not a valid alias"),
        ("Fraud", "'Fraud': 'Fraud' is not a valid model name"),
        (":3", "':3': '' is not a valid model name"),
        ("", "'': '' is not a valid model name"),
        ("fraud:1@x", "'fraud:1@x': 'fraud:1' is not a valid model name"),
    ],
)
def test_bad_references_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_ref(text)
    assert str(info.value).startswith(message)
    assert info.value.details[0]["field"] == "ref"


@given(
    name=st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True),
    version=st.integers(min_value=1, max_value=10**9),
)
def test_versions_round_trip(name: str, version: int) -> None:
    assert parse_ref(str(Ref(name, version=version))) == Ref(name, version=version)

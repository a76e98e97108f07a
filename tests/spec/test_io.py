"""YAML in and out: digests hash dumped bytes, so dumping must be exact and reversible."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.errors import InvalidSpec
from modelplane.spec.io import dump_yaml, load_yaml, parse
from modelplane.spec.manifest import Environment, Lineage, Manifest
from modelplane.spec.policy import Policy

texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=300,
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts
)
parameters = st.dictionaries(st.text(min_size=1, max_size=30), scalars, max_size=6)


@settings(max_examples=150, deadline=None)
@given(description=texts, labels=st.dictionaries(texts, texts, max_size=4), params=parameters)
def test_dump_then_load_gives_back_the_manifest(
    description: str, labels: dict[str, str], params: dict[str, object]
) -> None:
    manifest = Manifest.model_validate(
        {
            "name": "m",
            "runtime": "onnx",
            "format": "onnx",
            "model_file": "model.onnx",
            "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 16]}]},
            "environment": Environment(python="3.11.7"),
            "lineage": Lineage(parameters=params),
            "description": description,
            "labels": labels,
        }
    )
    text = dump_yaml(manifest)
    assert load_yaml(Manifest, text) == manifest
    assert dump_yaml(load_yaml(Manifest, text)) == text


def test_libyaml_is_used_here() -> None:
    """The wheels we pin ship libyaml: parsing manifests with it is several times faster."""
    assert yaml.__with_libyaml__


def test_a_missing_field_is_named_even_when_a_sibling_value_spells_it() -> None:
    """A tagged union's tag is left out of error paths (``work.shard.rows``), but a missing
    field whose name a sibling's value happens to spell is not a tag."""
    with pytest.raises(InvalidSpec) as caught:
        parse(Policy, {"kind": "Policy", "name": "x", "tiers": [{"name": "priority"}]})
    assert caught.value.details[0]["field"] == "tiers[0].priority"

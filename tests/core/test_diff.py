from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modelplane.core.diff import Change, Op, diff
from modelplane.spec.policy import Policy, Quota, Team

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def policy(**teams: int) -> dict[str, Any]:
    quotas = [Team(name=n, quotas={"gpu": Quota(nominal=g)}) for n, g in teams.items()]
    return Policy(teams=tuple(quotas)).model_dump(mode="json")


def lines(before: Any, after: Any) -> list[str]:
    return [c.line for c in diff(before, after)]


def test_one_line_per_changed_path() -> None:
    assert lines(policy(fraud=4000), policy(fraud=8000)) == [
        "~ teams.fraud.quotas.gpu.nominal: 4000 -> 8000"
    ]


def test_named_entries_added_and_removed_whatever_their_order() -> None:
    before, after = policy(a=1, b=2), policy(b=2, c=3)
    assert [(c.path, c.op) for c in diff(before, after)] == [
        ("teams.a", Op.REMOVED),
        ("teams.c", Op.ADDED),
    ]
    assert diff(policy(a=1, b=2), policy(b=2, a=1)) == ()
    first = diff(Policy().model_dump(mode="json"), policy(x=5))
    [added] = first
    assert added.line.startswith('+ teams.x: {"cohort": null, "name": "x", "quotas": {"gpu": ')


def test_ordered_lists_and_indexed_mappings() -> None:
    steps = {"degradation": {"steps": ["a", "b"]}}
    assert lines(steps, {"degradation": {"steps": ["b", "a"]}}) == [
        '~ degradation.steps: ["a", "b"] -> ["b", "a"]'
    ]
    floors = {"floors": [{"tier": "critical", "amount": 1}]}
    more = {"floors": [{"tier": "critical", "amount": 2}, {"tier": "batch", "amount": 0}]}
    assert lines(floors, more) == [
        "~ floors[0].amount: 1 -> 2",
        '+ floors[1]: {"amount": 0, "tier": "batch"}',
    ]


def test_odd_keys_are_quoted_and_types_matter() -> None:
    assert lines({"labels": {"a.b/c": "x"}}, {"labels": {"a.b/c": "y"}}) == [
        '~ labels["a.b/c"]: x -> y'
    ]
    assert lines({"v": 1}, {"v": True}) == ["~ v: 1 -> true"]
    assert diff(1, 2) == (Change("(root)", Op.CHANGED, 1, 2),)


@given(json_values)
def test_nothing_changes_between_a_value_and_itself(value: Any) -> None:
    assert diff(value, value) == ()


@given(st.dictionaries(st.text(max_size=3), scalars, max_size=5),
       st.dictionaries(st.text(max_size=3), scalars, max_size=5))  # fmt: skip
def test_flat_diff_is_empty_exactly_when_equal_and_reverses(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    forward = diff(a, b)
    equal = a.keys() == b.keys() and all(a[k] == b[k] and type(a[k]) is type(b[k]) for k in a)
    assert (forward == ()) == equal
    flip = {Op.ADDED: Op.REMOVED, Op.REMOVED: Op.ADDED, Op.CHANGED: Op.CHANGED}
    backward = diff(b, a)
    assert [(c.path, flip[c.op], c.after, c.before) for c in forward] == [
        (c.path, c.op, c.before, c.after) for c in backward
    ]

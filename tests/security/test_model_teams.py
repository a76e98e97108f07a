"""Models belong to a team: the first push claims the model, other teams' pushes are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelplane.errors import Forbidden, InvalidSpec
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry


@pytest.fixture
def registry(tmp_path: Path, database_url: str) -> Iterator[Registry]:
    opened = open_registry(database_url, str(tmp_path / "art"), actor="alice")
    yield opened
    opened.close()


def build(tmp_path: Path, name: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20, 2))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    return package(
        model, name=name, output_dir=tmp_path / f"{name}-{seed}", sample_input=x[:2]
    ).path


def test_the_first_push_claims_the_model(registry: Registry, tmp_path: Path) -> None:
    registry.push(build(tmp_path, "fraud", 1), team="risk")
    assert registry.model_team("fraud") == "risk"
    assert registry.push(build(tmp_path, "fraud", 2), team="risk").version == 2
    with pytest.raises(Forbidden, match="team 'risk'"):
        registry.push(build(tmp_path, "fraud", 3), team="growth")
    # the administrator (no team) may push to any model
    assert registry.push(build(tmp_path, "fraud", 4)).version == 3
    assert [v.version for v in registry.list_versions("fraud")] == [1, 2, 3]


def test_a_model_from_before_teams_takes_pushes_from_admin_only(
    registry: Registry, tmp_path: Path
) -> None:
    registry.push(build(tmp_path, "legacy", 1))
    assert registry.model_team("legacy") is None
    with pytest.raises(Forbidden, match="no team"):
        registry.push(build(tmp_path, "legacy", 2), team="risk")
    assert registry.push(build(tmp_path, "legacy", 3)).version == 2


def test_a_bad_team_names_the_field(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec) as caught:
        registry.push(build(tmp_path, "churn", 1), team="Growth Team")
    assert caught.value.details[0]["field"] == "team"

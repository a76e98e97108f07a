"""Key files: created once with mode 0600, read back the same, refused when others can read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from modelplane.errors import InvalidSpec
from modelplane.security.keys import AUDIT_KEY_FILE, load_audit_key


def test_the_audit_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    first = load_audit_key(tmp_path / "home")
    path = tmp_path / "home" / AUDIT_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_audit_key(tmp_path / "home").key_id == first.key_id
    # No temporary file is left behind beside it.
    assert [p.name for p in path.parent.iterdir()] == [AUDIT_KEY_FILE]


def test_a_key_from_the_environment_wins_and_writes_no_file(tmp_path: Path) -> None:
    key = load_audit_key(tmp_path, "s" * 32)
    assert key.key_id != load_audit_key(tmp_path / "other").key_id
    assert not (tmp_path / AUDIT_KEY_FILE).exists()
    with pytest.raises(InvalidSpec, match="at least 16 bytes"):
        load_audit_key(tmp_path, "short")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_audit_key(tmp_path)
    (tmp_path / AUDIT_KEY_FILE).chmod(0o644)
    with pytest.raises(InvalidSpec, match="chmod 600"):
        load_audit_key(tmp_path)

"""The state store engine: SQLite pragmas, migrations under concurrency, error translation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, text

from modelplane.errors import Conflict, InvalidSpec, StoreUnavailable
from modelplane.store.db import SCHEMA_HEAD, lost_race, open_engine, write_session
from modelplane.store.schema import AliasRow, Base, ModelRow


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def test_sqlite_is_created_under_a_missing_folder_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    engine = open_engine(f"sqlite:///{path}", busy_timeout_s=7)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
        assert path.is_file()
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD


def test_opening_again_is_a_no_op(database_url: str, engine: Engine) -> None:
    with write_session(engine) as session:
        session.execute(insert(ModelRow).values(name="kept", created_at=_now(), archived=False))
    again = open_engine(database_url)
    try:
        with again.connect() as conn:
            assert conn.execute(text("SELECT name FROM models")).scalars().all() == ["kept"]
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        again.dispose()


def test_many_openers_at_once_migrate_once(database_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def opener() -> None:
        try:
            start.wait(timeout=10)
            open_engine(database_url).dispose()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    engine = open_engine(database_url)
    try:
        assert "audit_head" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_unique_violation_is_a_retryable_conflict(engine: Engine) -> None:
    with write_session(engine) as session:
        session.execute(insert(ModelRow).values(name="m", created_at=_now(), archived=False))
    with pytest.raises(Conflict) as info, write_session(engine) as session:
        session.execute(insert(ModelRow).values(name="m", created_at=_now(), archived=False))
    assert lost_race(info.value)
    assert info.value.__cause__ is not None
    assert not lost_race(Conflict("a domain conflict"))


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(Conflict), write_session(engine) as session:
        session.execute(insert(AliasRow).values(model_name="ghost", alias="prod", version=1))


def test_sqlite_writers_queue_on_the_write_lock(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url, busy_timeout_s=0.2)
    try:
        with write_session(engine) as holder:
            holder.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the lock is held from here
            with pytest.raises(StoreUnavailable, match="locked"), write_session(engine) as other:
                other.execute(text("SELECT 1"))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    ["mysql://root@localhost/db", "sqlite://", "sqlite:///:memory:", "not a url at all"],
)
def test_unsupported_urls_are_invalid(url: str) -> None:
    with pytest.raises(InvalidSpec, match="database url"):
        open_engine(url)


def test_unreachable_postgres_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable) as info:
        open_engine("postgresql://postgres@127.0.0.1:1/nothing")
    assert info.value.__cause__ is not None


def _now() -> datetime:
    return datetime.now(UTC)


def test_schema_head_constant_matches_alembic() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from modelplane.store.db import MIGRATIONS_DIR, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD

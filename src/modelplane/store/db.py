"""Open the state store: an SQLAlchemy engine for SQLite (embedded) or PostgreSQL.

SQLite is opened in WAL mode with a busy timeout and foreign keys on. pysqlite's own
transaction handling starts transactions late and cannot take the write lock up front,
so it is switched off and we emit ``BEGIN`` ourselves: ``BEGIN IMMEDIATE`` for
:func:`write_session`, which makes concurrent writers queue on the lock instead of failing
halfway through a read-then-write. Driver errors leave this module as
:class:`~modelplane.errors.StoreUnavailable` or :class:`~modelplane.errors.Conflict`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session

from modelplane.errors import Conflict, InvalidSpec, StoreUnavailable

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "MIGRATIONS_DIR",
    "lost_race",
    "migrate",
    "open_engine",
    "read_session",
    "translate_errors",
    "write_session",
]

DEFAULT_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for the write lock before giving up."""

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0009"
"""The newest migration's revision; a test holds it equal to Alembic's head."""

_BEGIN_OPTION = "modelplane_sqlite_begin"
# Any constant works; it only has to be the same in every process migrating this database.
_MIGRATION_LOCK_KEY = 0x6D706C616E65  # "mplane"
# SQLSTATEs that mean "you lost a race, retry": serialization failure, deadlock, lock timeout.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def open_engine(
    url: str, *, migrate_schema: bool = True, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql[+psycopg]://…``), migrated.

    Migrations are idempotent and take a lock, so any number of processes may open the
    same store at once.
    """
    parsed = _parse(url)
    with translate_errors():
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed, busy_timeout_s)
        else:
            engine = create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    if migrate_schema and not _at_head(engine):
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
    return engine


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise InvalidSpec(f"database url {url!r} is not a valid URL") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        # psycopg 3 is the driver we ship; a bare postgresql:// would ask for psycopg2.
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise InvalidSpec(f"database url {url!r}: SQLite needs a file path, sqlite:///path")
        return parsed
    raise InvalidSpec(f"database url {url!r}: only sqlite and postgresql are supported")


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    path = Path(str(url.database))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the folder of {path}: {exc}") from exc
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
    busy_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see module doc
        cursor = dbapi_connection.cursor()
        # busy_timeout first: switching to WAL itself needs the lock.
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL, much faster
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors raised inside the block into modelplane errors."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise Conflict(f"the change conflicts with stored state: {_reason(exc)}") from exc
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
            raise Conflict(f"the change lost a race: {_reason(exc)}") from exc
        raise StoreUnavailable(f"state store unavailable: {_reason(exc)}") from exc
    except sa_exc.TimeoutError as exc:
        raise StoreUnavailable(f"state store unavailable: {exc}") from exc


def lost_race(exc: Conflict) -> bool:
    """True when ``exc`` came from the database (a unique key or a lock lost to another
    writer), so the whole transaction may be retried; false for a domain conflict."""
    return isinstance(exc.__cause__, sa_exc.DBAPIError)


def _reason(exc: sa_exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one write transaction, committed on success.

    On SQLite the transaction starts with ``BEGIN IMMEDIATE``: it holds the database's
    write lock from its first statement, so writers run one after another.
    """
    with translate_errors():
        bound = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with Session(bound, expire_on_commit=False) as session, session.begin():
            yield session


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session in one read transaction, rolled back at the end."""
    with translate_errors(), Session(engine) as session, session.begin():
        yield session
        session.rollback()


def _at_head(engine: Engine) -> bool:
    """A cheap read that lets every open after the first skip Alembic (and its import)."""
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except sa_exc.DBAPIError:
        return False  # no table yet: a new store
    return [row[0] for row in found] == [SCHEMA_HEAD]


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision, under a lock held by one process at a time."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with translate_errors(), engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        connection.begin()
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL lock_timeout = '60s'"))
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()

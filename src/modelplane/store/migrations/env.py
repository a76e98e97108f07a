"""Alembic environment: runs on the connection :func:`modelplane.store.db.migrate` hands in.

There is no ``alembic.ini`` and no URL here on purpose: the caller has already opened the
connection and taken the migration lock on it, so migrations run inside that lock.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from modelplane.store.schema import Base

__all__: list[str] = []


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError("run migrations through modelplane.store.db.migrate(), not the alembic CLI")
_run(_connection)

"""Alembic migrations of the state store, run in code by :func:`modelplane.store.db.migrate`."""

__all__: list[str] = []

"""Alembic environment. Migrations run programmatically (``store/migrate.py``) on a connection
handed over in ``config.attributes["connection"]``; there is no alembic.ini to keep in sync."""

from __future__ import annotations

from alembic import context

from cloudmfa.store.models import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

"""Apply the Alembic migrations to the configured database.

Safe to run from several replicas at once: the migration runs under store/db.py's
``serialised`` lock (PostgreSQL: an advisory lock; MariaDB/MySQL: a named lock, held past the
commits its DDL makes implicitly; SQLite: an immediate, write-locking transaction).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.store.db import serialised

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class _UnnamedPrimaryKeys(logging.Filter):
    """MariaDB/MySQL warn, once per table a migration creates, that a primary key keeps no name
    of its own (it is always PRIMARY); asyncmy logs each warning, which would read as trouble
    at every first start. Only that warning is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignored for PRIMARY key" not in record.getMessage()


logging.getLogger("asyncmy").addFilter(_UnnamedPrimaryKeys())


def _upgrade(connection: Connection) -> str | None:
    command.upgrade(alembic_config(connection), "head")
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_to_head(engine: AsyncEngine) -> str | None:
    """Bring the schema to the newest revision; returns that revision."""
    async with serialised(engine, "migrate") as conn:
        return await conn.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )

"""Migration 0006 adds the indexes the administration reads need at a million users
(bench/README.md, "A million users"): on PostgreSQL, trigram indexes that the admin search's
substring match uses; everywhere, `(type, seq)` for audit paging by type, in place of `(type)`.
It goes down again, and up again over indexes an operator built beforehand (CONCURRENTLY, under
the same names)."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.config import normalise_database_url
from cloudmfa.store.db import create_engine
from cloudmfa.store.migrate import alembic_config
from cloudmfa.store.models import users
from conftest import PgDatabase

TRIGRAM = {"ix_users_email_trgm", "ix_users_display_name_trgm"}


async def _indexes(engine: AsyncEngine, table: str) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda c: inspect(c).get_indexes(table))
    return {str(index["name"]) for index in found}


async def _migrate(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    action = command.downgrade if down else command.upgrade
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: action(alembic_config(c), revision))


async def test_the_indexes_come_and_go_with_the_migration(backend: dict[str, Any]) -> None:
    engine = create_engine(normalise_database_url(backend["database_url"]))
    postgres = engine.dialect.name == "postgresql"
    try:
        await _migrate(engine, "0006")
        audit = await _indexes(engine, "audit_events")
        assert "ix_audit_events_type_seq" in audit and "ix_audit_events_type" not in audit
        assert (TRIGRAM <= await _indexes(engine, "users")) is postgres

        await _migrate(engine, "0005", down=True)
        audit = await _indexes(engine, "audit_events")
        assert "ix_audit_events_type" in audit and "ix_audit_events_type_seq" not in audit
        assert not TRIGRAM & await _indexes(engine, "users")

        if postgres:  # built ahead by an operator: the migration keeps them
            async with engine.begin() as conn:
                await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
                await conn.execute(
                    text("CREATE INDEX ix_users_email_trgm ON users USING gin (email gin_trgm_ops)")
                )
        await _migrate(engine, "0006")
        assert (TRIGRAM <= await _indexes(engine, "users")) is postgres
    finally:
        await engine.dispose()


async def test_the_admin_search_can_use_the_trigram_indexes_on_postgres() -> None:
    """The statement store/users.search built at 0006 matches both indexes' expressions
    (`email`, and `lower(display_name)`): with sequential and plain index scans off, PostgreSQL
    answers it from them (0008 replaces the first: test_migration_0008.py). (Which plan it
    picks at a million rows is bench-scale's to measure; a test table is too small for the
    planner to prefer an index.)"""
    db = PgDatabase()
    await db.create()
    engine = create_engine(normalise_database_url(db.url))
    try:
        await _migrate(engine, "0006")
        async with engine.begin() as conn:
            # Neither a sequential scan nor an ordered walk of the email index: what is left is
            # a bitmap scan of whichever index serves the predicate.
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            await conn.execute(text("SET LOCAL enable_indexscan = off"))
            statement = (
                select(users)
                .where(
                    users.c.email.like("%person-12345@%", escape="\\")
                    | func.lower(users.c.display_name).like("%person-12345@%", escape="\\")
                )
                .order_by(users.c.email)
                .limit(50)
            )
            compiled = statement.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
            plan = "\n".join(row[0] for row in await conn.execute(text(f"EXPLAIN {compiled}")))
        assert "ix_users_email_trgm" in plan and "ix_users_display_name_trgm" in plan, plan
    finally:
        await engine.dispose()
        await db.drop()

"""Migration 0008 (PostgreSQL; nothing elsewhere): a B-tree on the emails by code point, and a
trigram index on the address less its first character (`substr(email, 2)`) in place of the one
on the whole address, so that store/users.search reads the addresses that start with a query as
one range of an index. Accounts written before the migration are found after it, every match
once and in email order (by code point, on every database, whatever PostgreSQL's collation);
the migration goes down and up again; the statement the search builds uses the indexes it was
made for."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from alembic import command
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.config import normalise_database_url
from cloudmfa.store import users as user_repo
from cloudmfa.store.db import create_engine
from cloudmfa.store.migrate import alembic_config
from cloudmfa.store.models import users
from conftest import ALL_BACKENDS, PG_DSN, PgDatabase

BACKENDS = ALL_BACKENDS
WINDOW = 2  # accounts read in email order before the search asks for the rest as a set

# Under Czech rules "ch" is one letter, sorted after "h": the addresses that start with "c" are
# then not one range of the email's unique index. By code point they are. Queries: "c" starts
# some addresses and sits inside others ("bch"), "ch" starts one and sits inside others, "h@"
# is only inside, "zz" only in a display name.
EMAILS = ["ca@x.test", "ch@x.test", "d@x.test", "h@x.test", "bch@x.test", "i-ch@x.test"]
DISPLAY = {"d@x.test": "Charlie ZZ", "h@x.test": "Cecil"}
QUERIES = ["c", "ch", "h@", "zz", "x.test", "nobody", "C"]


def _expected(query: str) -> list[str]:
    q = query.lower()
    return sorted(e for e in EMAILS if q in e or q in DISPLAY.get(e, "").lower())


async def _migrate(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    action = command.downgrade if down else command.upgrade
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: action(alembic_config(c), revision))


async def _insert_accounts(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        for email in EMAILS:
            await conn.execute(
                insert(users).values(
                    id=str(uuid.uuid4()),
                    email=email,
                    display_name=DISPLAY.get(email),
                    password_hash="x",
                    roles=[],
                    locked_at=None,
                    created_at=now,
                    updated_at=now,
                )
            )


async def _search_pages(engine: AsyncEngine, query: str) -> list[str]:
    """Every page of a search, two a page, as one list."""
    found: list[str] = []
    async with engine.connect() as conn:
        while True:
            page = await user_repo.search(
                conn, query=query, after_email=found[-1] if found else None, limit=2, window=WINDOW
            )
            found += [u.email for u in page]
            if len(page) < 2:
                return found


async def _in_email_order(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(users.c.email).order_by(users.c.email))).scalars())


async def _search_indexes(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda c: inspect(c).get_indexes("users"))
    return {str(i["name"]) for i in found} & {*NEW_INDEXES, "ix_users_email_trgm"}


NEW_INDEXES = {"ix_users_email_by_code_point", "ix_users_email_tail_trgm"}


async def test_accounts_from_before_are_found_after_in_email_order(
    backend: dict[str, Any],
) -> None:
    engine = create_engine(normalise_database_url(backend["database_url"]))
    postgres = engine.dialect.name == "postgresql"
    try:
        await _migrate(engine, "0007")
        await _insert_accounts(engine)
        assert await _search_indexes(engine) == ({"ix_users_email_trgm"} if postgres else set())

        await _migrate(engine, "0008")
        assert await _search_indexes(engine) == (NEW_INDEXES if postgres else set())
        for query in QUERIES:
            assert await _search_pages(engine, query) == _expected(query), query

        await _migrate(engine, "0007", down=True)
        assert await _search_indexes(engine) == ({"ix_users_email_trgm"} if postgres else set())
        for query in QUERIES:  # slower without the indexes, not different
            assert await _search_pages(engine, query) == _expected(query), query

        if postgres:  # built ahead by an operator (CONCURRENTLY): the migration keeps them
            async with engine.begin() as conn:
                await conn.execute(
                    text('CREATE INDEX ix_users_email_by_code_point ON users (email COLLATE "C")')
                )
        await _migrate(engine, "head")
        assert await _search_indexes(engine) == (NEW_INDEXES if postgres else set())
    finally:
        await engine.dispose()


class _CzechDatabase(PgDatabase):
    """A database whose default collation is a language's (ICU's Czech rules)."""

    async def create(self) -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(
                f'CREATE DATABASE "{self.name}" TEMPLATE template0 '
                "LOCALE_PROVIDER icu ICU_LOCALE 'cs-CZ' LOCALE 'C.UTF-8'"
            )
        finally:
            await conn.close()


async def test_under_a_language_collation_the_search_keeps_the_code_points_order() -> None:
    """Why the index is by code point: under Czech rules `ch@…` sorts after `h@…`, so the
    addresses starting with "c" are no range of the email's unique index. The search orders by
    code point (as on SQLite and MariaDB), finds every match, and reads the accounts written
    before the migration from the indexes it made."""
    db = _CzechDatabase()
    await db.create()
    engine = create_engine(normalise_database_url(db.url))
    try:
        await _migrate(engine, "0007")
        await _insert_accounts(engine)
        before = await _in_email_order(engine)
        assert before.index("ch@x.test") > before.index("h@x.test")  # the language's order

        await _migrate(engine, "0008")
        assert await _in_email_order(engine) == before  # the column keeps its collation
        for query in QUERIES:
            assert await _search_pages(engine, query) == _expected(query), query
        assert await _search_pages(engine, "") == sorted(EMAILS)  # no query: every account
    finally:
        await engine.dispose()
        await db.drop()


async def test_the_search_reads_each_part_from_its_index() -> None:
    """The addresses that start with the query come from the index by code point, read in
    order; those that hold it further in, and the display names, from the two trigram indexes.
    Sequential scans and plain index scans are off, as a test table is too small for the
    planner to prefer an index: what is left is a bitmap scan of whichever index serves each
    part (which plan it picks at a million accounts is bench-scale's to measure)."""
    db = PgDatabase()
    await db.create()
    engine = create_engine(normalise_database_url(db.url))
    try:
        await _migrate(engine, "head")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (id, email, display_name, password_hash, roles, "
                    "created_at, updated_at) "
                    "SELECT gen_random_uuid()::text, 'person-' || lpad(i::text, 5, '0') || "
                    "'@example.com', 'Person ' || i, 'x', '[]', now(), now() "
                    "FROM generate_series(1, 20000) AS i"
                )
            )
            await conn.execute(text("ANALYZE users"))
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            await conn.execute(text("SET LOCAL enable_indexscan = off"))
            query = "person-12345"
            statement = user_repo._first_matches_on_postgres(
                query, f"%{query}%", "person-00100@example.com", 50
            )
            compiled = statement.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
            plan = "\n".join(row[0] for row in await conn.execute(text(f"EXPLAIN {compiled}")))
            found = list((await conn.execute(statement)).scalars())
        assert "Bitmap Index Scan on ix_users_email_by_code_point" in plan, plan
        assert "Bitmap Index Scan on ix_users_email_tail_trgm" in plan, plan
        assert "Bitmap Index Scan on ix_users_display_name_trgm" in plan, plan
        assert len(found) == 1
    finally:
        await engine.dispose()
        await db.drop()

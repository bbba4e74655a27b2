"""PostgreSQL refusing a connection for want of room (SQLSTATE 53300, too many connections) is
an outage worth a retry: 503 `unavailable`, not a 500 that reads as a bug. Seen in bench (g)
when serve's and the worker's pools together passed max_connections."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloudmfa.api.problems import as_error
from cloudmfa.errors import InternalError, Unavailable
from cloudmfa.store.one_statement import fetchval
from conftest import PG_DSN


@pytest.fixture
async def engine_without_room() -> AsyncIterator[AsyncEngine]:
    """An engine whose role may hold no connection at all: PostgreSQL refuses it with 53300,
    the same SQLSTATE as a server past max_connections."""
    role = f"cloudmfa_full_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    engine = create_async_engine(
        PG_DSN.replace("postgresql://postgres@", f"postgresql+asyncpg://{role}@")
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_refused_connection_for_want_of_room_answers_unavailable(
    engine_without_room: AsyncEngine,
) -> None:
    with pytest.raises(DBAPIError) as refused:
        async with engine_without_room.connect() as conn:
            await conn.execute(text("SELECT 1"))
    assert getattr(refused.value.orig, "sqlstate", None) == "53300"
    error = as_error(refused.value)
    assert isinstance(error, Unavailable)
    assert error.status == 503


async def test_a_refused_connection_for_the_one_statement_writes_answers_unavailable(
    engine_without_room: AsyncEngine,
) -> None:
    """The sign-in's and the challenge's one-statement writes run on asyncpg's connection
    beneath SQLAlchemy's pool (store/one_statement.py): bench (g) met a refusal there as a 500
    when its pools passed max_connections."""
    with pytest.raises(Exception) as refused:
        await fetchval(engine_without_room, "SELECT 1", [])
    error = as_error(refused.value)
    assert isinstance(error, Unavailable)
    assert error.status == 503


async def test_a_connection_the_server_dropped_answers_unavailable() -> None:
    """A pooled connection whose backend went away (a restart, a terminated backend) fails its
    next statement: an outage too, not a bug."""
    engine = create_async_engine(PG_DSN.replace("postgresql://", "postgresql+asyncpg://"))
    admin = await asyncpg.connect(PG_DSN)
    try:
        async with engine.connect() as conn:
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(DBAPIError) as dropped:
                await conn.execute(text("SELECT 1"))
        assert dropped.value.connection_invalidated
        assert isinstance(as_error(dropped.value), Unavailable)
    finally:
        await admin.close()
        await engine.dispose()


async def test_other_database_errors_stay_internal_errors() -> None:
    engine = create_async_engine(PG_DSN.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        with pytest.raises(DBAPIError) as failed:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT * FROM no_such_table_here"))
        assert isinstance(as_error(failed.value), InternalError)
    finally:
        await engine.dispose()


async def test_a_connection_borrowed_beyond_the_pool_is_closed_cleanly_after_one_statement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The one-statement writes give their connection back to SQLAlchemy's pool; one borrowed
    beyond pool_size is then closed, which needs the event loop: it used to fail with
    MissingGreenlet (logged by the pool) and leave the connection unclosed."""
    application = f"cloudmfa_burst_{secrets.token_hex(4)}"
    engine = create_async_engine(
        PG_DSN.replace("postgresql://", "postgresql+asyncpg://"),
        pool_size=1,
        max_overflow=1,
        connect_args={"server_settings": {"application_name": application}},
    )
    admin = await asyncpg.connect(PG_DSN)
    try:
        with caplog.at_level("ERROR", logger="sqlalchemy.pool"):
            await asyncio.gather(
                fetchval(engine, "SELECT pg_sleep(0.05)", []),
                fetchval(engine, "SELECT pg_sleep(0.05)", []),
            )
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
        open_now = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
        )
        assert open_now == 1  # the pool's one; the borrowed one was closed on its return
    finally:
        await admin.close()
        await engine.dispose()

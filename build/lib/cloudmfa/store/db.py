"""The database engine: one place that knows how SQLite and PostgreSQL differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloudmfa.security.private_files import create_private_file, make_private_dir

DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 5000


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for reads: no transaction around them (no BEGIN and ROLLBACK round
    trips on PostgreSQL; on SQLite no write lock, so readers never queue behind writers)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def create_engine(
    database_url: str,
    *,
    pool_size: int = 20,
    sqlite_busy_timeout_ms: int = DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(database_url, sqlite_busy_timeout_ms)
    return create_async_engine(
        database_url,
        # Connections beyond pool_size are closed on return, so a pool too small for the
        # concurrency churns connections (a TLS probe, authentication and re-preparing every
        # statement each time); the pool keeps pool_size and borrows only a little beyond.
        pool_size=pool_size,
        max_overflow=pool_size // 2,
        pool_pre_ping=False,
        pool_recycle=1800,
    )


def _sqlite_engine(database_url: str, busy_timeout_ms: int) -> AsyncEngine:
    path = make_url(database_url).database
    if path and path != ":memory:":
        # Created before SQLite opens it, or it would be created world-readable (umask 022).
        make_private_dir(Path(path).parent)
        create_private_file(Path(path))
    engine = create_async_engine(database_url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # a reader (see read_only): each statement on its own, no lock taken
        # A deferred transaction that later writes can fail at once with SQLITE_BUSY when
        # another connection holds the write lock; taking the lock up front makes writers
        # queue on busy_timeout instead, which is what makes check-then-update atomic.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine

"""The database engine: one place that knows how SQLite, PostgreSQL and MariaDB/MySQL differ."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Row, Update, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from cloudmfa import metrics
from cloudmfa.security.private_files import create_private_file, make_private_dir

DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 5000
# A SQLite file has one write lock, so a process's transactions take turns on one connection:
# they queue in the pool, first come first served, and the next starts the moment the last
# one gives the connection back. With a connection each they waited in SQLite's busy handler,
# which retries after sleeps of up to 100 ms and so hands the lock on late and to whoever
# happens to try: at 32 concurrent sign-ins the p99 was 1.3-1.4 s against 0.22-0.24 s this way
# (bench/README.md, "SQLite's writers"). Reads have a pool of their own (reader_for).
SQLITE_WRITER_POOL_SIZE = 1
# SQLAlchemy's own defaults, named so that the metrics can state the pool's capacity.
SQLITE_READER_POOL_SIZE, SQLITE_READER_POOL_OVERFLOW = 5, 10


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for reads and single statements: no transaction around them (no BEGIN
    and ROLLBACK round trips on PostgreSQL; on SQLite no write lock). On a SQLite file that
    pool is the writers' one connection, so what must not wait for writers reads through
    ``reader_for`` instead."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def reader_for(engine: AsyncEngine, *, sqlite_busy_timeout_ms: int) -> AsyncEngine:
    """The engine for a service's reads. On a SQLite file, an engine of its own (dispose it
    too), whose connections never wait for the writers' one; elsewhere ``read_only(engine)``,
    the same pool."""
    if engine.dialect.name != "sqlite" or _sqlite_file(engine.url) is None:
        return read_only(engine)  # (an in-memory database lives in its one connection)
    reads = {
        "pool_size": SQLITE_READER_POOL_SIZE,
        "max_overflow": SQLITE_READER_POOL_OVERFLOW,
        "execution_options": {"isolation_level": "AUTOCOMMIT"},  # as read_only() sets it
    }
    return _sqlite_engine(engine.url, sqlite_busy_timeout_ms, reads)


def pool_capacity(database_url: str, pool_size: int, *, burst: bool = True) -> int:
    """Connections the engine's pool (and on SQLite the readers' one) may open at most, for
    the metrics."""
    if make_url(database_url).get_backend_name() == "sqlite":
        return SQLITE_WRITER_POOL_SIZE + SQLITE_READER_POOL_SIZE + SQLITE_READER_POOL_OVERFLOW
    return pool_size + (pool_size // 2 if burst else 0)


def create_engine(
    database_url: str,
    *,
    pool_size: int = 20,
    burst: bool = True,
    sqlite_busy_timeout_ms: int = DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
) -> AsyncEngine:
    """``burst``: borrow up to half as many connections again beyond ``pool_size`` when that
    many are in use at once (each closed when given back); without it, a caller waits for a
    connection of the pool."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = _sqlite_file(url)
        pool: dict[str, Any] = {}  # (an in-memory database: SQLAlchemy's pool of its one)
        if path is not None:
            # Created before SQLite opens it, or it would be created world-readable (umask 022).
            make_private_dir(Path(path).parent)
            create_private_file(Path(path))
            # A transaction queued longer than the busy timeout gets the same answer as one
            # that waited that long for another process's lock (503, store/outages.py).
            pool = {
                "pool_size": SQLITE_WRITER_POOL_SIZE,
                "max_overflow": 0,
                "pool_timeout": sqlite_busy_timeout_ms / 1000,
            }
        return _sqlite_engine(url, sqlite_busy_timeout_ms, pool)
    extra: dict[str, Any] = {}
    if url.get_backend_name() == "mysql":
        extra = {
            # InnoDB's default, REPEATABLE READ, answers a transaction's later plain SELECTs
            # from the snapshot of its first; READ COMMITTED is what PostgreSQL does, so every
            # statement sees what has been committed, as the stores expect. (Conditional
            # UPDATEs, which make things single use, read the newest row under either.)
            "isolation_level": "READ COMMITTED",
            "connect_args": {
                # Four bytes per character, so an address or a display name is stored as given.
                "charset": "utf8mb4",
                # Strict, whatever the server's default: a value too long for its column is an
                # error, as on PostgreSQL, never cut short without a word.
                "init_command": "SET SESSION sql_mode = 'TRADITIONAL'",
            },
        }
    engine = create_async_engine(
        database_url,
        # Connections beyond pool_size are closed on return, so a pool too small for the
        # concurrency churns connections (a TLS probe, authentication and re-preparing every
        # statement each time); the pool keeps pool_size and borrows only a little beyond.
        pool_size=pool_size,
        max_overflow=pool_size // 2 if burst else 0,
        pool_pre_ping=False,
        pool_recycle=1800,
        **extra,
    )
    metrics.watch_db_pool(engine)
    return engine


def is_mysql(engine_or_conn: AsyncEngine | AsyncConnection) -> bool:
    """MariaDB or MySQL (SQLAlchemy's one "mysql" dialect, whichever server answered)."""
    return engine_or_conn.dialect.name in ("mysql", "mariadb")


async def update_returning(
    conn: AsyncConnection,
    stmt: Update,
    *columns: ColumnElement[Any],
    params: Mapping[str, Any] | None = None,
) -> Sequence[Row[Any]]:
    """``stmt`` with ``RETURNING columns``, in the caller's transaction, on every database;
    ``params`` are the values of its bind parameters.

    MariaDB and MySQL have no ``UPDATE … RETURNING``. There the matching rows are first read
    with ``SELECT … FOR UPDATE``, a locking read: it sees the newest committed version of each
    row and locks it to the end of the transaction, so a parallel update of the same row waits
    and then finds that it no longer matches, as it would with PostgreSQL's conditional UPDATE.
    Then exactly the rows read are updated. Two round trips instead of one."""
    if conn.dialect.update_returning:
        return (await conn.execute(stmt.returning(*columns), params)).all()
    assert conn.in_transaction(), "a locking read outside a transaction locks nothing"
    table, where = stmt.table, stmt.whereclause
    assert where is not None, "an UPDATE of every row has nothing to emulate RETURNING for"
    (key,) = table.primary_key.columns  # type: ignore[attr-defined]
    wanted = [key, *(c for c in columns if c is not key)]
    rows = (await conn.execute(select(*wanted).where(where).with_for_update(), params)).all()
    if rows:
        await conn.execute(stmt.where(key.in_([row[0] for row in rows])), params)
    return rows


# How long a replica waits for another to finish the same serialised work (a migration).
_MYSQL_LOCK_TIMEOUT_S = 600
# Named locks belong to the server, not to a database: the name carries the database's, hashed
# to stay within the 64 characters a lock name may have, so deployments sharing a server do not
# wait for each other.
_MYSQL_LOCK_NAME = "CONCAT('cloudmfa:', :name, ':', LEFT(SHA1(DATABASE()), 20))"


@asynccontextmanager
async def serialised(engine: AsyncEngine, name: str) -> AsyncIterator[AsyncConnection]:
    """A transaction that no other process runs under the same ``name`` at the same time,
    whichever replica it is in: for the work every replica does at start (migrations, the first
    signing key), where the second must find what the first committed.

    PostgreSQL: an advisory lock held to the end of the transaction. MariaDB/MySQL: a named
    lock (GET_LOCK), which belongs to the connection, so it is let go only after the commit.
    SQLite: the transaction's write lock (BEGIN IMMEDIATE, see _sqlite_engine) is enough."""
    async with engine.connect() as conn:
        if is_mysql(conn):
            got = await conn.scalar(
                text(f"SELECT GET_LOCK({_MYSQL_LOCK_NAME}, :timeout)"),
                {"name": name, "timeout": _MYSQL_LOCK_TIMEOUT_S},
            )
            await conn.commit()
            if got != 1:
                raise TimeoutError(f"another replica held the {name!r} lock too long")
        try:
            async with conn.begin():
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_IDS[name]}
                    )
                yield conn
        finally:
            if is_mysql(conn):
                await conn.execute(text(f"SELECT RELEASE_LOCK({_MYSQL_LOCK_NAME})"), {"name": name})
                await conn.commit()


# PostgreSQL keys advisory locks by integer; these are the keys earlier releases took, so that
# replicas of two releases side by side (a rolling upgrade) still exclude each other.
_PG_LOCK_IDS = {"migrate": 0x636C6F75646D6661, "signing-key": 7355608}


def _sqlite_file(url: URL) -> str | None:
    """The SQLite database's file, or None for an in-memory one."""
    return url.database if url.database and url.database != ":memory:" else None


def _sqlite_engine(url: URL, busy_timeout_ms: int, options: Mapping[str, Any]) -> AsyncEngine:
    """``options``: the pool's (and a reader's execution options), for create_async_engine."""
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout_ms / 1000}, **options)
    metrics.watch_db_pool(engine)

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

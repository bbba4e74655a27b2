"""Rows of several tables written all or nothing, as one statement where PostgreSQL allows it.

On PostgreSQL through asyncpg the rows go out as one statement of data-modifying CTEs, sent
without a transaction around it (a statement is atomic on its own): one round trip where
BEGIN, an INSERT per table and COMMIT take two more than the tables. Each table's rows travel as
one JSON array, read back by ``json_populate_recordset`` with the table's own row type: a handful
of bind parameters instead of one per column, which is most of what running the statement costs
the service (bench/README.md). The statement is SQLAlchemy Core built from the table
definitions in store/models.py, compiled once per set of tables, and run by asyncpg on a
connection from SQLAlchemy's pool: through SQLAlchemy's execution layer the sign-in's statement
cost the service about 0.7 ms of CPU more. Any other database (SQLite, MariaDB/MySQL) gets the
INSERTs in one transaction.

store/sign_in.py builds its statement from the same parts, each insert conditional on a claim.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Insert,
    Table,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

Rows = list[tuple[Table, list[dict[str, Any]]]]


def one_statement_possible(engine: AsyncEngine) -> bool:
    dialect = engine.dialect
    return dialect.name == "postgresql" and dialect.driver == "asyncpg"


async def insert_rows(engine: AsyncEngine, rows: Rows) -> None:
    """Insert the rows, table by table in the order given (foreign keys first), all or none."""
    if one_statement_possible(engine):
        tables = tuple(table for table, _ in rows)
        sql, order = _compiled_inserts(tables, engine.dialect)
        values = json_values(rows)
        await fetchval(engine, sql, [values[name] for name in order])
        return
    async with engine.begin() as conn:
        for table, table_rows in rows:
            await conn.execute(_plain_insert(table), table_rows)


async def fetchval(engine: AsyncEngine, sql: str, args: Sequence[Any]) -> Any:
    """Run one statement through asyncpg on a connection of SQLAlchemy's pool, outside any
    transaction (asyncpg runs it as its own); the first column of its first row.

    The connection is taken and given back through an AsyncConnection, about 50 µs more than
    ``AsyncEngine.raw_connection()``, whose synchronous ``close()`` cannot close a connection
    that the full pool will not keep (one borrowed beyond pool_size): SQLAlchemy logged
    MissingGreenlet and dropped it unclosed, every time, under bursts (bench (g))."""
    async with engine.connect() as conn:
        pooled = await conn.get_raw_connection()
        asyncpg_connection = pooled.driver_connection
        assert asyncpg_connection is not None
        return await asyncpg_connection.fetchval(sql, *args)


def json_values(rows: Rows) -> dict[str, str]:
    """The bind parameters of ``insert_if``: one JSON array per table."""
    return {
        f"{table.name}_rows": json.dumps(table_rows, default=_json_value)
        for table, table_rows in rows
    }


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()  # with its offset: PostgreSQL reads it as timestamptz
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # bytea's hex input format
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def insert_if(table: Table, condition: ColumnElement[bool] | None = None) -> Insert:
    """INSERT the rows of a JSON array (the bind parameter ``<table>_rows``), typed by the
    table's own row type, if ``condition``; RETURNING the first column, for the statement to
    count."""
    rows = cast(bindparam(f"{table.name}_rows", type_=Text), JSON)
    columns = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is True)]
    records = func.json_populate_recordset(literal_column(f"NULL::{table.name}"), rows)
    source = records.table_valued(*columns)
    selected = select(*(source.c[name] for name in columns))
    if condition is not None:
        selected = selected.where(condition)
    return insert(table).from_select(columns, selected).returning(table.c[columns[0]])


@functools.cache
def _compiled_inserts(tables: tuple[Table, ...], dialect: Dialect) -> tuple[str, tuple[str, ...]]:
    """WITH new_a AS (INSERT …), new_b AS (INSERT …) SELECT count(*) FROM new_a, as PostgreSQL
    text, and its bind parameters' names in ``$n`` order. Every data-modifying CTE runs whether
    or not the query reads it."""
    inserted = [insert_if(table).cte(f"new_{table.name}") for table in tables]
    statement = select(func.count()).select_from(inserted[0]).add_cte(*inserted[1:])
    compiled = statement.compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ())


@functools.cache
def _plain_insert(table: Table) -> Insert:
    return insert(table)

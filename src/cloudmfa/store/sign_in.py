"""The second step of login as one atomic write (API.md "Login").

A sign-in completes with the factor's claim (store/claims.py), the new session, its first
refresh token, a remembered device when asked for, and the audit events: all of it or nothing.
When the claim matches no row (a parallel request spent the same proof first, or the account
was locked meanwhile) nothing is written.

The rows are built once (``Completion.rows``) and written one of two ways (store/one_statement.py
says why):
- PostgreSQL: one statement, data-modifying CTEs each conditional on the claim, sent without a
  transaction around it: one round trip where BEGIN, five statements and COMMIT take seven.
- any other database (SQLite, MariaDB/MySQL): the claim, then the inserts, in one transaction;
  the claim counts as spent when its conditional UPDATE matched a row (store/claims.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, insert, literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.store import claims
from cloudmfa.store.audit import AuditEvent, event_row
from cloudmfa.store.claims import Claim
from cloudmfa.store.models import audit_events, refresh_tokens, remembered_devices, sessions
from cloudmfa.store.one_statement import (
    Rows,
    fetchval,
    insert_if,
    json_values,
    one_statement_possible,
)
from cloudmfa.store.sessions import Session, session_row


@dataclass(frozen=True, slots=True)
class NewDevice:
    id: str
    token_hash: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Completion:
    """Everything a completed sign-in writes."""

    claim: Claim
    session: Session
    refresh_token_hash: str
    device: NewDevice | None
    events: Sequence[AuditEvent]

    def rows(self) -> Rows:
        """The rows to insert once the claim is spent, table by table, in foreign-key order."""
        s, now = self.session, self.session.created_at
        rows: Rows = [
            (sessions, [session_row(s)]),
            (
                refresh_tokens,
                [{"token_hash": self.refresh_token_hash, "session_id": s.id, "created_at": now}],
            ),
        ]
        if self.device is not None:
            device = {
                "id": self.device.id,
                "user_id": s.user_id,
                "token_hash": self.device.token_hash,
                "created_at": now,
                "expires_at": self.device.expires_at,
                "ip": s.ip,
                "user_agent": s.user_agent,
            }
            rows.append((remembered_devices, [device]))
        rows.append((audit_events, [{**event_row(e), "at": now} for e in self.events]))
        return rows


class SignInStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._one_statement = one_statement_possible(engine)

    async def complete(self, completion: Completion) -> bool:
        """Write the whole completion atomically; False, and nothing written, when the claim
        matched no row."""
        session, rows = completion.session, completion.rows()
        claim_values = claims.bound(
            completion.claim, user_id=session.user_id, now=session.created_at
        )
        if self._one_statement:
            tables = tuple(table.name for table, _ in rows)
            sql, order = _compiled(type(completion.claim), tables, self._engine.dialect)
            values = {**claim_values, **json_values(rows)}
            return bool(await fetchval(self._engine, sql, [values[n] for n in order]))
        async with self._engine.begin() as conn:
            spent = await conn.execute(claims.runnable(type(completion.claim)), claim_values)
            if spent.rowcount == 0:
                return False
            for table, table_rows in rows:
                await conn.execute(_INSERTS[table.name], table_rows)
        return True


_TABLES = {t.name: t for t in (sessions, refresh_tokens, remembered_devices, audit_events)}
_INSERTS = {name: insert(table) for name, table in _TABLES.items()}


@functools.cache
def _one_statement(claim_type: type[Claim], tables: tuple[str, ...]) -> Select[Any]:
    """WITH claim AS (UPDATE … RETURNING 1), new_sessions AS (INSERT … SELECT … FROM
    json_populate_recordset(NULL::sessions, $rows) WHERE EXISTS (claim) RETURNING …), …
    SELECT count(*) FROM new_sessions. Built once per claim class and set of tables (with a
    remembered device or not), then run with bound values."""
    claim = claims.runnable(claim_type).returning(literal_column("1").label("spent")).cte("claim")
    spent = exists(select(claim))
    inserted = [insert_if(_TABLES[name], spent).cte(f"new_{name}") for name in tables]
    # Every data-modifying CTE runs whether or not the query reads it.
    return select(func.count()).select_from(inserted[0]).add_cte(*inserted[1:])


@functools.cache
def _compiled(
    claim_type: type[Claim], tables: tuple[str, ...], dialect: Dialect
) -> tuple[str, tuple[str, ...]]:
    """The statement as PostgreSQL text, and its bind parameters' names in ``$n`` order. The
    values need no processing: strings, integers, JSON text and aware UTC datetimes, which
    asyncpg encodes by the types the text casts them to."""
    compiled = _one_statement(claim_type, tables).compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ())

"""The second step of login as one atomic write (API.md "Login").

A sign-in completes with the factor's claim (store/claims.py), the new session, its first
refresh token, a remembered device when asked for, and the audit events: all of it or nothing.
When the claim matches no row (a parallel request spent the same proof first, or the account
was locked meanwhile) nothing is written.

The rows are built once (``Completion.rows``) and written one of two ways:
- PostgreSQL: one statement, data-modifying CTEs each conditional on the claim, sent without a
  transaction around it: one round trip where BEGIN, five statements and COMMIT take seven.
- any other database (SQLite): the claim, then the inserts, in one transaction.
Both are SQLAlchemy Core built from the table definitions in store/models.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, Table, exists, func, insert, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.store import claims
from cloudmfa.store.audit import AuditEvent, event_row
from cloudmfa.store.claims import Claim
from cloudmfa.store.models import audit_events, refresh_tokens, remembered_devices, sessions
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

    def rows(self) -> list[tuple[Table, list[dict[str, Any]]]]:
        """The rows to insert once the claim is spent, table by table, in foreign-key order."""
        s, now = self.session, self.session.created_at
        rows: list[tuple[Table, list[dict[str, Any]]]] = [
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
    def __init__(self, engine: AsyncEngine, reader: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader
        self._one_statement = engine.dialect.name == "postgresql"

    async def complete(self, completion: Completion) -> bool:
        """Write the whole completion atomically; False, and nothing written, when the claim
        matched no row."""
        if self._one_statement:
            async with self._reader.connect() as conn:  # no transaction: one statement
                written = (await conn.execute(_as_one_statement(completion))).scalar_one()
            return bool(written)
        session = completion.session
        async with self._engine.begin() as conn:
            spent = await claims.apply(
                conn, completion.claim, user_id=session.user_id, now=session.created_at
            )
            if not spent:
                return False
            for table, rows in completion.rows():
                await conn.execute(insert(table), rows)
        return True


def _as_one_statement(completion: Completion) -> Select[Any]:
    """WITH claim AS (UPDATE … RETURNING 1), new_sessions AS (INSERT … SELECT … WHERE EXISTS
    (claim) RETURNING 1), … SELECT count(*) FROM new_sessions."""
    session = completion.session
    claim = claims.claim_statement(
        completion.claim, user_id=session.user_id, now=session.created_at
    ).cte("claim")
    spent = exists(select(claim))
    inserted = [
        _insert_if(table, rows, spent).cte(f"new_{table.name}") for table, rows in completion.rows()
    ]
    # Every data-modifying CTE runs whether or not the query reads it.
    return select(func.count()).select_from(inserted[0]).add_cte(*inserted[1:])


def _insert_if(table: Table, rows: list[dict[str, Any]], condition: Any) -> Insert:
    columns = list(rows[0])
    selects = [
        select(*(literal(row[name], type_=table.c[name].type) for name in columns)).where(condition)
        for row in rows
    ]
    source: Any = selects[0] if len(selects) == 1 else union_all(*selects)
    first_column = table.c[columns[0]]
    return insert(table).from_select(columns, source).returning(first_column)

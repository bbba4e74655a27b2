"""Deleting rows past their use, at most ``limit`` rows per statement.

Each function is one ``DELETE … WHERE key IN (SELECT key … LIMIT n)`` built from the tables in
models.py, so a caller commits in small batches instead of holding one giant transaction (and
its locks) over a large table. Each returns how many rows it deleted; fewer than ``limit``
means nothing more matches. Which rows are past their use, and why, is decided by the caller
(flows/maintenance.py); these functions only take the cut-off times.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Table, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import (
    audit_events,
    factors,
    refresh_tokens,
    remembered_devices,
    sessions,
)


async def _delete_batch(
    conn: AsyncConnection, table: Table, key: str, where: ColumnElement[bool], limit: int
) -> int:
    column = table.c[key]
    chosen = select(column).where(where).limit(limit)
    result = await conn.execute(delete(table).where(column.in_(chosen.scalar_subquery())))
    return int(result.rowcount)


def _ended(now: datetime) -> ColumnElement[bool]:
    return or_(sessions.c.revoked_at.is_not(None), sessions.c.expires_at <= now)


async def delete_used_refresh_tokens(
    conn: AsyncConnection, *, now: datetime, issued_before: datetime, limit: int
) -> int:
    """Used refresh tokens whose session has ended, or that were issued before
    ``issued_before``. A used token of a live session is kept: presenting it again is how
    reuse is detected (and the session revoked)."""
    of_ended_session = refresh_tokens.c.session_id.in_(
        select(sessions.c.id).where(_ended(now)).scalar_subquery()
    )
    where = refresh_tokens.c.used_at.is_not(None) & or_(
        of_ended_session, refresh_tokens.c.created_at < issued_before
    )
    return await _delete_batch(conn, refresh_tokens, "token_hash", where, limit)


async def delete_ended_sessions(
    conn: AsyncConnection, *, ended_before: datetime, limit: int
) -> tuple[int, int]:
    """Sessions revoked or expired before ``ended_before``, with their remaining refresh
    tokens (deleted here rather than left to the foreign key's cascade, so they are counted).
    Returns (sessions, refresh tokens)."""
    chosen = (
        select(sessions.c.id)
        .where(or_(sessions.c.revoked_at < ended_before, sessions.c.expires_at < ended_before))
        .limit(limit)
    )
    ids = list((await conn.execute(chosen)).scalars())
    if not ids:
        return 0, 0
    tokens = await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.session_id.in_(ids)))
    deleted = await conn.execute(delete(sessions).where(sessions.c.id.in_(ids)))
    return int(deleted.rowcount), int(tokens.rowcount)


async def delete_expired_devices(conn: AsyncConnection, *, now: datetime, limit: int) -> int:
    """Remembered devices past their expiry: they no longer skip anything."""
    where = remembered_devices.c.expires_at <= now
    return await _delete_batch(conn, remembered_devices, "id", where, limit)


async def delete_pending_factors(
    conn: AsyncConnection, *, created_before: datetime, limit: int
) -> int:
    """Factors enrolled before ``created_before`` and never activated."""
    where = (factors.c.status == "pending") & (factors.c.created_at < created_before)
    return await _delete_batch(conn, factors, "id", where, limit)


async def delete_audit_events(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Audit events recorded before ``before``."""
    return await _delete_batch(conn, audit_events, "seq", audit_events.c.at < before, limit)

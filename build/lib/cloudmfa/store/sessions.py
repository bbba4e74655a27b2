"""Sessions and their single-use refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import refresh_tokens, sessions


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: str
    created_at: datetime
    auth_time: datetime
    last_seen_at: datetime
    expires_at: datetime
    amr: tuple[str, ...]
    acr: str | None
    mfa_verified: bool
    ip: str | None
    user_agent: str | None
    revoked_at: datetime | None


def _session(row: Any) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        created_at=row.created_at,
        auth_time=row.auth_time,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
        amr=tuple(row.amr or ()),
        acr=row.acr,
        mfa_verified=bool(row.mfa_verified),
        ip=row.ip,
        user_agent=row.user_agent,
        revoked_at=row.revoked_at,
    )


_INSERT_SESSION = insert(sessions)
_INSERT_REFRESH_TOKEN = insert(refresh_tokens)


def session_row(s: Session) -> dict[str, Any]:
    """The columns of a new session's row."""
    return {
        "id": s.id,
        "user_id": s.user_id,
        "created_at": s.created_at,
        "auth_time": s.auth_time,
        "last_seen_at": s.last_seen_at,
        "expires_at": s.expires_at,
        "amr": list(s.amr),
        "acr": s.acr,
        "mfa_verified": s.mfa_verified,
        "ip": s.ip,
        "user_agent": s.user_agent,
    }


async def insert_session(conn: AsyncConnection, s: Session) -> None:
    await conn.execute(_INSERT_SESSION, session_row(s))


async def get_session(conn: AsyncConnection, session_id: str) -> Session | None:
    row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
    return _session(row) if row else None


async def list_live_sessions(conn: AsyncConnection, user_id: str, now: datetime) -> list[Session]:
    stmt = (
        select(sessions)
        .where(
            sessions.c.user_id == user_id,
            sessions.c.revoked_at.is_(None),
            sessions.c.expires_at > now,
        )
        .order_by(sessions.c.created_at.desc(), sessions.c.id)
    )
    return [_session(row) for row in await conn.execute(stmt)]


async def touch(conn: AsyncConnection, session_id: str, now: datetime) -> None:
    await conn.execute(update(sessions).where(sessions.c.id == session_id).values(last_seen_at=now))


async def revoke(
    conn: AsyncConnection, session_ids: list[str], *, now: datetime, reason: str
) -> list[str]:
    """Revoke the given sessions that are still live; returns the ids actually revoked."""
    if not session_ids:
        return []
    stmt = (
        update(sessions)
        .where(sessions.c.id.in_(session_ids), sessions.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .returning(sessions.c.id)
    )
    return [row.id for row in await conn.execute(stmt)]


async def live_session_ids(
    conn: AsyncConnection, user_id: str, now: datetime, *, except_id: str | None = None
) -> list[str]:
    stmt = select(sessions.c.id).where(
        sessions.c.user_id == user_id,
        sessions.c.revoked_at.is_(None),
        sessions.c.expires_at > now,
    )
    if except_id is not None:
        stmt = stmt.where(sessions.c.id != except_id)
    return [row.id for row in await conn.execute(stmt)]


async def recently_revoked(conn: AsyncConnection, since: datetime) -> list[str]:
    stmt = select(sessions.c.id).where(sessions.c.revoked_at > since)
    return [row.id for row in await conn.execute(stmt)]


async def insert_refresh_token(
    conn: AsyncConnection, *, token_hash: str, session_id: str, now: datetime
) -> None:
    await conn.execute(
        _INSERT_REFRESH_TOKEN,
        {"token_hash": token_hash, "session_id": session_id, "created_at": now},
    )


async def consume_refresh_token(
    conn: AsyncConnection, token_hash: str, now: datetime
) -> str | None:
    """Mark the token used in one atomic statement; returns its session id, or None when the
    token is unknown or was used already (two concurrent refreshes: exactly one wins)."""
    stmt = (
        update(refresh_tokens)
        .where(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.used_at.is_(None))
        .values(used_at=now)
        .returning(refresh_tokens.c.session_id)
    )
    row = (await conn.execute(stmt)).first()
    return row.session_id if row else None


async def session_of_used_token(conn: AsyncConnection, token_hash: str) -> str | None:
    stmt = select(refresh_tokens.c.session_id).where(
        refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.used_at.is_not(None)
    )
    row = (await conn.execute(stmt)).first()
    return row.session_id if row else None

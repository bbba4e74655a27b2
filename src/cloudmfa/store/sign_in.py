"""The second step of login as one atomic write (API.md "Login").

A sign-in completes with the factor's claim (store/claims.py), the new session, its first
refresh token, a remembered device when asked for, and the audit events: all of it or nothing.
When the claim finds its row already spent (a parallel request used the same code first),
nothing is written.

On PostgreSQL this is a single statement (data-modifying CTEs, every part conditional on the
claim), sent through asyncpg on a pooled connection without a transaction around it: one round
trip where a transaction of separate statements takes six, and no SQLAlchemy statement
execution, which costs about four times what asyncpg does (bench/README.md, the verify step).
Elsewhere (SQLite) the same writes run in one BEGIN IMMEDIATE transaction through the
repositories.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudmfa.factors.base import StoredFactor
from cloudmfa.store import claims
from cloudmfa.store import devices as device_repo
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import sessions as session_repo
from cloudmfa.store.audit import AuditEvent, event_row, record
from cloudmfa.store.claims import Claim, RecoveryCodeClaim, TimeStepClaim
from cloudmfa.store.sessions import Session


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


class SignInUnit(Protocol):
    async def factor(self, factor_id: str, user_id: str) -> StoredFactor | None:
        """The factor as it is now (read without a transaction)."""
        ...

    async def complete(self, completion: Completion) -> bool:
        """Write the whole completion atomically; False, and nothing written, when the claim
        was already spent."""
        ...


class SignInStore(Protocol):
    def unit(self) -> Any:
        """``async with store.unit() as unit``: one pooled connection for a verification."""
        ...


def sign_in_store(engine: AsyncEngine, reader: AsyncEngine) -> SignInStore:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
        return PostgresSignIn(engine)
    return TransactionalSignIn(engine, reader)


# --- any database: the repositories in one transaction ------------------------------------


class TransactionalSignIn:
    def __init__(self, engine: AsyncEngine, reader: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[SignInUnit]:
        yield _TransactionalUnit(self._engine, self._reader)


class _TransactionalUnit:
    def __init__(self, engine: AsyncEngine, reader: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader

    async def factor(self, factor_id: str, user_id: str) -> StoredFactor | None:
        async with self._reader.connect() as conn:
            return await factor_repo.get_factor(conn, factor_id, user_id)

    async def complete(self, completion: Completion) -> bool:
        session = completion.session
        async with self._engine.begin() as conn:
            if not await claims.apply(conn, completion.claim, session.created_at):
                return False
            await _write_session_and_events(conn, completion)
        return True


async def _write_session_and_events(conn: AsyncConnection, completion: Completion) -> None:
    session = completion.session
    now = session.created_at
    await session_repo.insert_session(conn, session)
    await session_repo.insert_refresh_token(
        conn, token_hash=completion.refresh_token_hash, session_id=session.id, now=now
    )
    if completion.device is not None:
        await device_repo.insert_device(
            conn,
            device_id=completion.device.id,
            user_id=session.user_id,
            token_hash=completion.device.token_hash,
            now=now,
            expires_at=completion.device.expires_at,
            ip=session.ip,
            user_agent=session.user_agent,
        )
    await record(conn, now, *completion.events)


# --- PostgreSQL: one statement --------------------------------------------------------------

# $1 and $2 belong to the claim, $3 is the time of the sign-in; the rest are shared.
_CLAIM_SQL = {
    TimeStepClaim: """
        UPDATE factors SET last_used_step = $2, last_used_at = $3
        WHERE id = $1 AND (last_used_step IS NULL OR last_used_step < $2)
        RETURNING 1""",
    RecoveryCodeClaim: """
        UPDATE recovery_codes SET used_at = $3
        WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
        RETURNING 1""",
}

_COMPLETE_SQL = """
WITH claim AS ({claim}
), new_session AS (
    INSERT INTO sessions (id, user_id, created_at, auth_time, last_seen_at, expires_at, amr,
                          acr, mfa_verified, ip, user_agent)
    SELECT $4, $5, $3, $3, $3, $6, $7::json, $8, $9, $10, $11
    WHERE EXISTS (SELECT FROM claim)
    RETURNING id
), new_refresh_token AS (
    INSERT INTO refresh_tokens (token_hash, session_id, created_at)
    SELECT $12, id, $3 FROM new_session
    RETURNING 1
), new_device AS (
    INSERT INTO remembered_devices (id, user_id, token_hash, created_at, expires_at, ip,
                                    user_agent)
    SELECT $13, $5, $14, $3, $15, $10, $11 FROM new_session WHERE $13::varchar IS NOT NULL
    RETURNING 1
), new_events AS (
    INSERT INTO audit_events (id, at, type, actor_id, subject_id, ip, user_agent, outcome,
                              details)
    SELECT e.id, $3, e.type, e.actor_id, e.subject_id, e.ip, e.user_agent, e.outcome, e.details
    FROM new_session, json_to_recordset($16::json) AS e(
        id varchar, type varchar, actor_id varchar, subject_id varchar, ip varchar,
        user_agent varchar, outcome varchar, details json)
    RETURNING 1
)
SELECT count(*) FROM new_session
"""

_STATEMENTS = {kind: _COMPLETE_SQL.format(claim=sql) for kind, sql in _CLAIM_SQL.items()}

_GET_FACTOR_SQL = """
SELECT id, user_id, type, label, status, secret, data, last_used_step, created_at,
       activated_at, last_used_at
FROM factors WHERE id = $1 AND user_id = $2
"""


class PostgresSignIn:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[SignInUnit]:
        # Straight from the pool: a SQLAlchemy Connection around it would cost more CPU than
        # both statements. asyncpg runs each statement as its own transaction, as wanted.
        pooled = await self._engine.raw_connection()
        try:
            yield _PostgresUnit(pooled.driver_connection)
        finally:
            pooled.close()  # back to the pool


class _PostgresUnit:
    def __init__(self, connection: Any) -> None:
        self._pg = connection  # an asyncpg connection, with SQLAlchemy's JSON codec set up

    async def factor(self, factor_id: str, user_id: str) -> StoredFactor | None:
        row = await self._pg.fetchrow(_GET_FACTOR_SQL, factor_id, user_id)
        # JSON columns arrive decoded: SQLAlchemy registers its JSON codec on every connection.
        return factor_repo.factor_from_row(row) if row is not None else None

    async def complete(self, completion: Completion) -> bool:
        s, device, claim = completion.session, completion.device, completion.claim
        match claim:
            case TimeStepClaim():
                claim_args: tuple[Any, ...] = (claim.factor_id, claim.step)
            case RecoveryCodeClaim():
                claim_args = (claim.user_id, claim.code_hash)
        events = [event_row(e) for e in completion.events]  # the statement adds the time
        written = await self._pg.fetchval(
            _STATEMENTS[type(claim)],
            *claim_args,
            s.created_at,
            s.id,
            s.user_id,
            s.expires_at,
            json.dumps(list(s.amr)),
            s.acr,
            s.mfa_verified,
            s.ip,
            s.user_agent,
            completion.refresh_token_hash,
            device.id if device else None,
            device.token_hash if device else None,
            device.expires_at if device else None,
            json.dumps(events),
        )
        return bool(written)

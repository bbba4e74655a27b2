"""The delivery outbox's rows (models.delivery_outbox): insert in the caller's transaction, claim
under a lease, record the outcome, find what is due, prune what is done.

A claim is one conditional UPDATE: only a row that is queued and due, or whose lease has run
out, matches, so of two dispatchers racing for one row exactly one gets it, and a row whose
claimer died is taken again once its lease ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Update, and_, bindparam, delete, desc, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from cloudmfa.store.db import update_returning
from cloudmfa.store.models import delivery_outbox as t

QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
REASON_MAX = 500


@dataclass(frozen=True, slots=True)
class NewRow:
    id: str
    channel: str
    sealed: bytes
    created_at: datetime
    user_id: str | None
    binding: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    channel: str
    sealed: bytes | None
    attempts: int  # including this one
    created_at: datetime
    user_id: str | None
    binding: str | None


def new_row_values(row: NewRow) -> dict[str, object]:
    """The columns of a new row: queued, due at once."""
    return {
        "id": row.id,
        "channel": row.channel,
        "sealed": row.sealed,
        "status": QUEUED,
        "attempts": 0,
        "next_try_at": row.created_at,
        "created_at": row.created_at,
        "user_id": row.user_id,
        "binding": row.binding,
    }


async def insert_row(conn: AsyncConnection, row: NewRow) -> None:
    await conn.execute(insert(t).values(**new_row_values(row)))


def _claimable(now: datetime | BindParameter[datetime]):  # type: ignore[no-untyped-def]
    # Queued and due, or being sent by a claimer whose lease has ended (it crashed or hung).
    return and_(t.c.status.in_((QUEUED, SENDING)), t.c.next_try_at <= now)


def _at(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=t.c.next_try_at.type)


# The statements run for every message (the claim and the record of its outcome) are built
# once, with bind parameters (named apart from the columns, as SQLAlchemy asks of an UPDATE):
# building one and computing its cache key on every call made a claim cost half to two thirds
# more CPU (`bench/micro.py delivery`; bench/README.md, "(g)").
_CLAIMED = (t.c.id, t.c.channel, t.c.sealed, t.c.attempts, t.c.created_at, t.c.user_id, t.c.binding)
_CLAIM = (
    update(t)
    .where(t.c.id == bindparam("row_id"), _claimable(_at("now")))
    .values(status=SENDING, next_try_at=_at("lease_until"), attempts=t.c.attempts + 1)
)
_CLAIM_RETURNING = _CLAIM.returning(*_CLAIMED)
# A row this claimer still holds: the attempt count, raised by every claim, fences out a
# claimer whose lease ran out and whose row another claimer took meanwhile.
_HELD = and_(
    t.c.id == bindparam("row_id"), t.c.status == SENDING, t.c.attempts == bindparam("held_attempts")
)
# The sealed text holds a code: erased once the provider has it, or once it failed for good.
_MARK_SENT = (
    update(t)
    .where(_HELD)
    .values(status=SENT, sealed=None, finished_at=_at("now"), provider=bindparam("provider_name"))
)
_MARK_RETRY = (
    update(t)
    .where(_HELD)
    .values(status=QUEUED, next_try_at=_at("retry_at"), reason=bindparam("reason_text"))
)
_MARK_FAILED = (
    update(t)
    .where(_HELD)
    .values(status=FAILED, sealed=None, finished_at=_at("now"), reason=bindparam("reason_text"))
)


async def claim(
    conn: AsyncConnection, row_id: str, *, now: datetime, lease_until: datetime
) -> Claimed | None:
    """Take the row for sending until ``lease_until``; None when it is not claimable (sent,
    failed, not yet due, or held by another claimer's live lease). In the caller's transaction."""
    params = {"row_id": row_id, "now": now, "lease_until": lease_until}
    if conn.dialect.update_returning:
        rows = (await conn.execute(_CLAIM_RETURNING, params)).all()
    else:
        rows = await update_returning(conn, _CLAIM, *_CLAIMED, params=params)
    if not rows:
        return None
    row = rows[0]._mapping
    # MariaDB's emulation reads the row before its update: count this attempt there too.
    attempts = row["attempts"] if conn.dialect.update_returning else row["attempts"] + 1
    return Claimed(
        id=row["id"],
        channel=row["channel"],
        sealed=row["sealed"],
        attempts=attempts,
        created_at=row["created_at"],
        user_id=row["user_id"],
        binding=row["binding"],
    )


async def _finish(
    conn: AsyncConnection, held: Claimed, statement: Update, **params: object
) -> bool:
    """Record an outcome for a row this claimer still holds: False when its lease ran out and
    another claimer took the row meanwhile."""
    result = await conn.execute(
        statement, {"row_id": held.id, "held_attempts": held.attempts, **params}
    )
    return result.rowcount == 1


async def mark_sent(conn: AsyncConnection, held: Claimed, *, now: datetime, provider: str) -> bool:
    return await _finish(conn, held, _MARK_SENT, now=now, provider_name=provider)


async def mark_retry(conn: AsyncConnection, held: Claimed, *, at: datetime, reason: str) -> bool:
    return await _finish(conn, held, _MARK_RETRY, retry_at=at, reason_text=reason[:REASON_MAX])


async def mark_failed(conn: AsyncConnection, held: Claimed, *, now: datetime, reason: str) -> bool:
    return await _finish(conn, held, _MARK_FAILED, now=now, reason_text=reason[:REASON_MAX])


async def due_ids(
    conn: AsyncConnection, *, now: datetime, untried_before: datetime, limit: int
) -> list[str]:
    """Rows a sweeper should hand to delivery: a retry that is due, a claim whose lease ran
    out, and a row never tried that was committed before ``untried_before`` (its hand-over was
    lost; a younger one is still with the dispatcher it was handed to). A row never tried is
    due from its commit on, so its ``next_try_at`` is its commit time."""
    handed_over_long_ago = or_(t.c.attempts > 0, t.c.next_try_at <= untried_before)
    rows = await conn.execute(
        select(t.c.id)
        .where(_claimable(now), handed_over_long_ago)
        .order_by(t.c.next_try_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


async def latest_status(conn: AsyncConnection, binding: str) -> str | None:
    """The status of the newest message for a binding (a resend supersedes a failure)."""
    return await conn.scalar(
        select(t.c.status).where(t.c.binding == binding).order_by(desc(t.c.created_at)).limit(1)
    )


async def status_of(conn: AsyncConnection, row_id: str) -> str | None:
    return await conn.scalar(select(t.c.status).where(t.c.id == row_id))


async def prune_finished(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` sent or failed rows finished before ``before``."""
    ids: Sequence[str] = (
        await conn.scalars(
            select(t.c.id)
            .where(or_(t.c.status == SENT, t.c.status == FAILED), t.c.finished_at < before)
            .limit(limit)
        )
    ).all()
    if not ids:
        return 0
    await conn.execute(delete(t).where(t.c.id.in_(ids)))
    return len(ids)

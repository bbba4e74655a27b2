"""The audit trail. Events are written inside the caller's transaction, so a state change and
its event commit or roll back together."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.ids import time_ordered_id
from cloudmfa.store.models import audit_events

_INSERT_EVENT = insert(audit_events)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    type: str
    outcome: str = "success"
    actor_id: str | None = None
    subject_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def event_row(event: AuditEvent) -> dict[str, Any]:
    """The columns of an event's row, with a fresh id; the caller adds the time."""
    return {
        "id": time_ordered_id(),
        "type": event.type,
        "actor_id": event.actor_id,
        "subject_id": event.subject_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "outcome": event.outcome,
        "details": event.details,
    }


async def record(conn: AsyncConnection, now: datetime, *events: AuditEvent) -> None:
    """Write one or more events with a single statement."""
    if not events:
        return
    rows = [{**event_row(e), "at": now} for e in events]
    if len(rows) == 1:
        await conn.execute(_INSERT_EVENT, rows[0])
    else:  # one statement for the batch: a single round trip, unlike executemany
        await conn.execute(insert(audit_events).values(rows))


async def list_events(
    conn: AsyncConnection,
    *,
    user_id: str | None = None,
    type_: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first; ``before_seq`` continues from a page's last event."""
    stmt = select(audit_events).order_by(audit_events.c.seq.desc()).limit(limit)
    if user_id is not None:
        stmt = stmt.where(
            or_(audit_events.c.actor_id == user_id, audit_events.c.subject_id == user_id)
        )
    if type_ is not None:
        stmt = stmt.where(audit_events.c.type == type_)
    if before_seq is not None:
        stmt = stmt.where(audit_events.c.seq < before_seq)
    return [dict(row._mapping) for row in await conn.execute(stmt)]

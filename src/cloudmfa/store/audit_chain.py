"""The audit trail's hash chain: sealing events into it, walking it, exporting it.

Writing an event (store/audit.py) never touches the chain: the event is inserted with its
chain columns NULL, inside the caller's own transaction, so a sign-in waits on nothing shared.
A sealer later takes the events not yet chained, in the order they were written, and gives
each its position and link::

    link(n) = SHA-256( link(n-1) as 32 bytes  ||  canonical JSON of event n's content )

where link(0) is 32 zero bytes and the canonical JSON is ``canonical_content`` below. Sealers
serialise on the one ``audit_chain`` row (which records the chain's last position and link),
never on the events' table. An event that commits after a later-written one was sealed simply
takes the next free position: the chain's order is the order of sealing.

The ``audit_chain`` row also records the chain's base: the position and link of the last event
that retention pruning deleted (``delete_prefix``), so the chain still verifies from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import audit_chain, audit_events

GENESIS_HASH = "0" * 64  # link(0): the predecessor of the first event ever written
CHAIN_ROW_ID = 1

# What an event's link covers: every field of the event as the API shows it.
CONTENT_COLUMNS = (
    audit_events.c.id,
    audit_events.c.at,
    audit_events.c.type,
    audit_events.c.actor_id,
    audit_events.c.subject_id,
    audit_events.c.ip,
    audit_events.c.user_agent,
    audit_events.c.outcome,
    audit_events.c.details,
)
_CHAINED = (*CONTENT_COLUMNS, audit_events.c.chain_seq, audit_events.c.chain_hash)

_SEAL_EVENT = (
    update(audit_events)
    .where(audit_events.c.seq == bindparam("b_seq"))
    .values(chain_seq=bindparam("b_pos"), chain_hash=bindparam("b_hash"))
)


class ChainMoved(Exception):
    """Another sealer moved the chain's head meanwhile; this batch must roll back."""


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content_of(row: Any) -> dict[str, Any]:
    """An event's content (of a result row): what its link covers and what the export writes."""
    values = row._mapping
    content = {column.name: values[column.name] for column in CONTENT_COLUMNS}
    content["at"] = format_time(content["at"])
    content["details"] = content["details"] or {}
    return content


def canonical_content(content: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same bytes for the same content on every database."""
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def link(previous_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical_content(content)).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainEnds:
    base_seq: int  # the last position pruned: the chain continues at base_seq + 1
    base_hash: str
    head_seq: int  # the last position sealed
    head_hash: str


async def ends(conn: AsyncConnection, *, lock: bool = False) -> ChainEnds:
    """The chain's base and head; ``lock`` holds its row until the transaction ends (the one
    lock sealers and the prune share; SQLite's write lock already serialises them)."""
    stmt = select(
        audit_chain.c.base_seq,
        audit_chain.c.base_hash,
        audit_chain.c.head_seq,
        audit_chain.c.head_hash,
    ).where(audit_chain.c.id == CHAIN_ROW_ID)
    if lock:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).one()
    return ChainEnds(int(row.base_seq), row.base_hash, int(row.head_seq), row.head_hash)


async def _move_head(conn: AsyncConnection, was: ChainEnds, seq: int, hash_: str) -> None:
    moved = await conn.execute(
        update(audit_chain)
        .where(audit_chain.c.id == CHAIN_ROW_ID, audit_chain.c.head_seq == was.head_seq)
        .values(head_seq=seq, head_hash=hash_)
    )
    if moved.rowcount != 1:
        raise ChainMoved


async def any_pending(conn: AsyncConnection) -> bool:
    """Whether some committed event is not chained yet."""
    found = select(audit_events.c.seq).where(audit_events.c.chain_seq.is_(None)).limit(1)
    return (await conn.execute(found)).first() is not None


async def seal_batch(conn: AsyncConnection, limit: int) -> int:
    """Chain up to ``limit`` committed events not yet chained, oldest written first; returns
    how many. Run in a transaction of its own: raises ChainMoved (roll back) if another
    sealer got there first."""
    head = await ends(conn, lock=True)
    pending = await conn.execute(
        select(audit_events.c.seq, *CONTENT_COLUMNS)
        .where(audit_events.c.chain_seq.is_(None))
        .order_by(audit_events.c.seq)
        .limit(limit)
    )
    position, previous = head.head_seq, head.head_hash
    sealed = []
    for row in pending:
        position += 1
        previous = link(previous, content_of(row))
        sealed.append({"b_seq": row.seq, "b_pos": position, "b_hash": previous})
    if not sealed:
        return 0
    await conn.execute(_SEAL_EVENT, sealed)
    await _move_head(conn, head, position, previous)
    return len(sealed)


async def chained_after(
    conn: AsyncConnection, position: int, limit: int, through: int
) -> list[Any]:
    """Up to ``limit`` chained events after ``position`` up to ``through``, in chain order."""
    result = await conn.execute(
        select(*_CHAINED)
        .where(audit_events.c.chain_seq > position, audit_events.c.chain_seq <= through)
        .order_by(audit_events.c.chain_seq)
        .limit(limit)
    )
    return list(result)


async def walk(
    conn: AsyncConnection, *, after: int, through: int, page: int = 1000
) -> AsyncIterator[Any]:
    """Every chained event after position ``after`` up to ``through``, in chain order, a page
    at a time."""
    while True:
        rows = await chained_after(conn, after, page, through)
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = int(rows[-1].chain_seq)


async def hash_at(conn: AsyncConnection, position: int) -> str | None:
    """The stored link of the event at ``position``, or None when there is none."""
    return (
        await conn.execute(
            select(audit_events.c.chain_hash).where(audit_events.c.chain_seq == position)
        )
    ).scalar_one_or_none()


async def delete_prefix(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` events from the start of the chain that were written before
    ``before``, stopping at the first that was not, and move the chain's base past them: what
    is left still verifies from the base. Only chained events are deleted (the caller seals
    first); an event written meanwhile is newer than any cut-off. Returns how many went."""
    chain = await ends(conn, lock=True)
    rows = await conn.execute(
        select(audit_events.c.chain_seq, audit_events.c.chain_hash, audit_events.c.at)
        .where(audit_events.c.chain_seq > chain.base_seq)
        .order_by(audit_events.c.chain_seq)
        .limit(limit)
    )
    last = None
    for row in rows:
        if row.at >= before:
            break
        last = row
    if last is None:
        return 0
    deleted = await conn.execute(
        delete(audit_events).where(
            audit_events.c.chain_seq > chain.base_seq,
            audit_events.c.chain_seq <= last.chain_seq,
        )
    )
    await conn.execute(
        update(audit_chain)
        .where(audit_chain.c.id == CHAIN_ROW_ID)
        .values(base_seq=last.chain_seq, base_hash=last.chain_hash)
    )
    return int(deleted.rowcount)

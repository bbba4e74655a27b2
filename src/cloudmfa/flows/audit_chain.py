"""Sealing the audit trail into its hash chain (in the background of ``serve``, and before
``cloudmfa audit verify``, ``export`` and the prune), checking the chain, exporting it.

How the chain is built is described in store/audit_chain.py; here is when it is built and how a
break is reported. Sign-ins never wait on any of it: they only insert their events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudmfa.flows.deps import Maintenance
from cloudmfa.store import audit_chain as chain_repo
from cloudmfa.store.db import read_only

log = logging.getLogger("cloudmfa")

SEAL_BATCH_SIZE = 500
MAX_COLLISIONS = 10


async def seal_pending(engine: AsyncEngine, *, batch_size: int = SEAL_BATCH_SIZE) -> int:
    """Chain every event committed so far, one committed batch at a time; returns how many
    this call chained (another sealer may have chained some of them meanwhile)."""
    # Looked at first without a transaction: an idle sealer then takes no lock at all (on
    # SQLite the write lock, which every writer shares).
    async with read_only(engine).connect() as conn:
        if not await chain_repo.any_pending(conn):
            return 0
    total, collisions = 0, 0
    while True:
        try:
            async with engine.begin() as conn:
                sealed = await chain_repo.seal_batch(conn, batch_size)
        except (chain_repo.ChainMoved, IntegrityError):
            # Another sealer took these positions first (possible only where the row lock is
            # not honoured); its batch stands and this one rolled back: look again. Again and
            # again means the chain's row no longer matches its events: `audit verify` says how.
            collisions += 1
            if collisions > MAX_COLLISIONS:
                raise
            continue
        total += sealed
        if sealed < batch_size:
            return total


@dataclass(frozen=True, slots=True)
class Verdict:
    events: int  # chained events checked
    head_seq: int
    head_hash: str
    problem: str | None = None  # the first break, naming the event; None: the chain is whole

    @property
    def whole(self) -> bool:
        return self.problem is None


async def verify(engine: AsyncEngine) -> Verdict:
    """Seal what is pending, then walk the chain from its base and recompute every link.

    The first break is reported: an event whose content or link changed (its recomputed link
    differs from the stored one), a position with no event (an event deleted, or moved), or a
    chain that ends before the head its row records (events deleted from the end). Reads take
    no lock (SQLite's write lock included): sealers and the prune go on meanwhile, so the walk
    stops at the head it read first, and a break at the start is looked at again when a prune
    moved the base meanwhile."""
    await seal_pending(engine)
    for _ in range(3):
        async with read_only(engine).connect() as conn:
            chain = await chain_repo.ends(conn)
            verdict = await _walk_and_check(conn, chain)
            if verdict.whole or (await chain_repo.ends(conn)).base_seq == chain.base_seq:
                return verdict
    return verdict


async def _walk_and_check(conn: AsyncConnection, chain: chain_repo.ChainEnds) -> Verdict:
    expected, previous, checked = chain.base_seq + 1, chain.base_hash, 0

    def verdict(problem: str | None) -> Verdict:
        return Verdict(checked, chain.head_seq, chain.head_hash, problem)

    async for row in chain_repo.walk(conn, after=chain.base_seq, through=chain.head_seq):
        position = int(row.chain_seq)
        if position != expected:
            return verdict(
                f"the event at position {expected} was removed "
                f"(the chain continues at position {position}, event {row.id})"
            )
        computed = chain_repo.link(previous, chain_repo.content_of(row))
        if computed != row.chain_hash:
            return verdict(
                f"event {row.id} at position {position} was changed (its content or its "
                "link does not match)"
            )
        previous, expected, checked = row.chain_hash, expected + 1, checked + 1
    if expected - 1 != chain.head_seq or previous != chain.head_hash:
        return verdict(
            f"the event at position {expected} was removed (the chain ends at position "
            f"{expected - 1}, its head is at position {chain.head_seq})"
        )
    return verdict(None)


async def export(
    engine: AsyncEngine, *, since: datetime | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every chained event (after sealing what is pending) in chain order, as its content plus
    ``chain_seq``, ``prev_hash`` and ``chain_hash``: enough to recompute each link outside the
    service. ``since`` leaves out events written before it."""
    await seal_pending(engine)
    async with read_only(engine).connect() as conn:
        chain = await chain_repo.ends(conn)
        previous: str | None = chain.base_hash
        expected = chain.base_seq + 1
        async for row in chain_repo.walk(conn, after=chain.base_seq, through=chain.head_seq):
            position = int(row.chain_seq)
            if position != expected:  # a gap: the predecessor is whatever is stored there
                previous = await chain_repo.hash_at(conn, position - 1)
            content = chain_repo.content_of(row)
            if since is None or row.at >= since:
                yield {
                    **content,
                    "chain_seq": position,
                    "prev_hash": previous,
                    "chain_hash": row.chain_hash,
                }
            previous, expected = row.chain_hash, position + 1


# --- in the background of serve --------------------------------------------------------------


async def seal_periodically(svc: Maintenance) -> None:
    """Every ``audit_seal_interval_s``, for as long as the worker runs. Every worker does it;
    they take turns on the chain's row, and one that finds nothing pending is done at once."""
    interval_s = svc.settings.audit_seal_interval_s
    while True:
        await asyncio.sleep(interval_s)
        try:
            await seal_pending(svc.engine)
        except Exception:
            log.exception("sealing the audit trail failed; trying again in %d s", interval_s)


def start_sealing(svc: Maintenance) -> asyncio.Task[None] | None:
    """The periodic sealer of a serving worker, or None when CLOUDMFA_AUDIT_SEAL_INTERVAL_S
    is 0 (the events are then sealed by `cloudmfa audit verify` and by the prune)."""
    if svc.settings.audit_seal_interval_s <= 0:
        return None
    return asyncio.create_task(seal_periodically(svc), name="cloudmfa-audit-seal")


async def stop_sealing(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

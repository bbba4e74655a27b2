"""Operator tasks that walk the whole database: re-encrypting secrets after a key rotation,
and pruning rows past their use (by ``cloudmfa prune`` and periodically inside ``serve``).

The secrets are the factors' seeds and the private halves of the token signing keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudmfa.flows.audit_chain import seal_pending
from cloudmfa.flows.deps import Maintenance
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import keys as key_repo
from cloudmfa.store import outbox as outbox_repo
from cloudmfa.store import prune as prune_repo

log = logging.getLogger("cloudmfa")

BATCH_SIZE = 200
PRUNE_BATCH_SIZE = 1000
# Held in the shared store by whichever worker or replica prunes, for one interval.
PRUNE_LEASE_KEY = "prune:lease"
# A starting worker waits this long (or one interval, if shorter) before its first prune, so
# that it does not compete with the warm-up of a deployment.
PRUNE_FIRST_DELAY_S = 60.0
# A periodic prune stops starting batches once this share of its lease has passed, so that it
# is over before the lease lapses and another worker may take it.
PRUNE_LEASE_USE = 0.9


@dataclass
class ReencryptReport:
    reencrypted: int = 0
    already_current: int = 0


async def pending_reencryption(svc: Maintenance) -> int:
    """How many stored secrets are not yet under the current key."""
    current = svc.secretbox.current_id
    async with svc.reader.connect() as conn:
        stored_keys = await key_repo.stored_private_keys(conn)
    count = sum(1 for _, stored in stored_keys if key_repo.sealed_under(stored) != current)
    after = ""
    while True:
        async with svc.reader.connect() as conn:
            rows = await factor_repo.secrets_after(conn, after, BATCH_SIZE)
        if not rows:
            return count
        count += sum(1 for _, blob in rows if svc.secretbox.key_id_of(blob) != current)
        after = rows[-1][0]


async def reencrypt_secrets(
    svc: Maintenance, *, progress: Callable[[ReencryptReport], None] | None = None
) -> ReencryptReport:
    """Re-encrypt every stored secret under the current key, one committed batch at a time.

    Resumable: an interrupted run leaves each batch either done or untouched, and the next run
    skips whatever is already under the current key.
    """
    report = ReencryptReport()
    current = svc.secretbox.current_id
    async with svc.engine.begin() as conn:  # a handful of signing keys: one batch
        for kid, stored in await key_repo.stored_private_keys(conn):
            if key_repo.sealed_under(stored) == current:
                report.already_current += 1
                continue
            pem = key_repo.unseal(svc.secretbox, kid, stored)
            resealed = key_repo.seal(svc.secretbox, kid, pem)
            if await key_repo.replace_private_key(conn, kid, stored, resealed):
                report.reencrypted += 1
    after = ""
    while True:
        async with svc.engine.begin() as conn:
            rows = await factor_repo.secrets_after(conn, after, BATCH_SIZE)
            if not rows:
                break
            for factor_id, blob in rows:
                if svc.secretbox.key_id_of(blob) == current:
                    report.already_current += 1
                    continue
                plaintext = svc.secretbox.decrypt(blob, context=factor_id)
                fresh = svc.secretbox.encrypt(plaintext, context=factor_id)
                if await factor_repo.replace_secret(conn, factor_id, blob, fresh):
                    report.reencrypted += 1
            after = rows[-1][0]
        if progress is not None:
            progress(report)
    return report


# --- pruning -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retention:
    """How long rows are kept once they are past their use."""

    session_grace: timedelta  # after a session is revoked or expires
    session_max: timedelta  # a used refresh token this old belongs to an ended session
    pending_factor_max: timedelta  # a factor never activated
    audit: timedelta | None  # None: audit events are kept forever
    messages: timedelta = timedelta(days=7)  # the delivery outbox's sent and failed rows


def retention_for(svc: Maintenance) -> Retention:
    settings = svc.settings
    return Retention(
        # Access tokens of an ended session are refused, until they expire, by the session's
        # revocation; a restarted single process reloads those revocations from the sessions
        # revoked this recently (Services.start). The rows are needed as long as that.
        session_grace=timedelta(seconds=svc.revocation_ttl_s),
        session_max=timedelta(hours=settings.session_max_hours),
        pending_factor_max=timedelta(hours=settings.pending_factor_max_hours),
        audit=timedelta(days=settings.audit_retention_days)
        if settings.audit_retention_days
        else None,
        messages=timedelta(hours=settings.delivery_retention_hours),
    )


@dataclass
class PruneReport:
    refresh_tokens: int = 0
    sessions: int = 0
    remembered_devices: int = 0
    pending_factors: int = 0
    audit_events: int = 0
    messages: int = 0
    complete: bool = True  # False: stopped at its deadline; the next run carries on

    def summary(self) -> str:
        return (
            f"{self.refresh_tokens} refresh token(s), {self.sessions} ended session(s), "
            f"{self.remembered_devices} expired remembered device(s), "
            f"{self.pending_factors} pending factor(s), {self.audit_events} audit event(s), "
            f"{self.messages} delivered or failed message(s)"
        )


async def prune(
    engine: AsyncEngine,
    retention: Retention,
    now: datetime,
    *,
    batch_size: int = PRUNE_BATCH_SIZE,
    deadline: float | None = None,
) -> PruneReport:
    """Delete what is past its use as of ``now``, one committed batch at a time, until nothing
    is left or the ``time.monotonic()`` deadline passes. Safe to run beside the service and
    beside another prune: each batch deletes only rows nothing will read again."""
    report = PruneReport()

    async def in_batches(delete_batch: Callable[[AsyncConnection], Awaitable[int]]) -> int:
        total = 0
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                report.complete = False
                return total
            async with engine.begin() as conn:
                deleted = await delete_batch(conn)
            total += deleted
            if deleted < batch_size:
                return total

    async def ended_sessions(conn: AsyncConnection) -> int:
        sessions, tokens = await prune_repo.delete_ended_sessions(
            conn, ended_before=now - retention.session_grace, limit=batch_size
        )
        report.refresh_tokens += tokens
        return sessions

    report.refresh_tokens += await in_batches(
        lambda conn: prune_repo.delete_used_refresh_tokens(
            conn, now=now, issued_before=now - retention.session_max, limit=batch_size
        )
    )
    report.sessions = await in_batches(ended_sessions)
    report.remembered_devices = await in_batches(
        lambda conn: prune_repo.delete_expired_devices(conn, now=now, limit=batch_size)
    )
    report.pending_factors = await in_batches(
        lambda conn: prune_repo.delete_pending_factors(
            conn, created_before=now - retention.pending_factor_max, limit=batch_size
        )
    )
    report.messages = await in_batches(
        lambda conn: outbox_repo.prune_finished(
            conn, before=now - retention.messages, limit=batch_size
        )
    )
    if retention.audit is not None:
        # Events are deleted from the start of the chain only, and only once chained: seal
        # first, so that none older than the cut-off is left behind unchained.
        await seal_pending(engine)
        audit_cutoff = now - retention.audit
        report.audit_events = await in_batches(
            lambda conn: prune_repo.delete_audit_events(conn, before=audit_cutoff, limit=batch_size)
        )
    return report


async def prune_if_due(svc: Maintenance) -> PruneReport | None:
    """Prune, unless another worker or replica has within the last interval: the lease in the
    shared store goes to one of them per interval, and its prune ends before the lease does, so
    no two prune at once. None when the lease was taken."""
    interval_s = svc.settings.prune_interval_s
    owner = f"{socket.gethostname()}:{os.getpid()}"
    if not await svc.ephemeral.set_if_absent(PRUNE_LEASE_KEY, owner, interval_s):
        return None
    deadline = time.monotonic() + interval_s * PRUNE_LEASE_USE
    report = await prune(svc.engine, retention_for(svc), svc.clock.now(), deadline=deadline)
    log.info("pruned %s%s", report.summary(), "" if report.complete else "; more next time")
    return report


async def prune_periodically(
    svc: Maintenance, *, first_delay_s: float = PRUNE_FIRST_DELAY_S
) -> None:
    """Every ``prune_interval_s``, for as long as the worker runs. A failure (the database or
    the shared store out of reach) is logged and tried again at the next interval: it never
    ends the loop, let alone the worker."""
    interval_s = svc.settings.prune_interval_s
    await asyncio.sleep(min(first_delay_s, interval_s))
    while True:
        try:
            await prune_if_due(svc)
        except Exception:
            log.exception("pruning failed; trying again in %d s", interval_s)
        await asyncio.sleep(interval_s)


def start_pruning(svc: Maintenance) -> asyncio.Task[None] | None:
    """The periodic prune of a serving worker, or None when CLOUDMFA_PRUNE_INTERVAL_S is 0."""
    if svc.settings.prune_interval_s <= 0:
        return None
    return asyncio.create_task(prune_periodically(svc), name="cloudmfa-prune")


async def stop_pruning(task: asyncio.Task[None] | None) -> None:
    """Cancel the periodic prune; a batch in flight rolls back."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

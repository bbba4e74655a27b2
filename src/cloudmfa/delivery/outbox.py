"""The transactional outbox: messages are rows written in the flow's own transaction, delivered
after it commits.

``DatabaseOutbox.submit`` seals the message (its text holds a code) and inserts it with the
caller's connection: if the transaction rolls back, there is nothing to send; if it commits,
the row is there even if the process dies a moment later. A flow whose only other write is
the message's audit events (the challenge step) hands them over with it instead
(``submit_with_events``): one atomic write of their own, a single statement on PostgreSQL
(store/one_statement.py). After the commit the flow calls
``dispatch`` with the row ids, which hands them to the configured dispatcher (an asyncio task
in this process, or a job on the Redis queue for `cloudmfa worker`); a sweeper hands over
whatever stayed queued (a crash between commit and hand-over, a retry that is due, a claim
whose lease ran out).

``Deliverer.deliver`` does one delivery: claim the row under a lease, send it through the
channel's provider chain with the row id as idempotency key, record the outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudmfa import metrics
from cloudmfa.clock import Clock
from cloudmfa.delivery.base import (
    Channel,
    DeliveryError,
    Message,
    MessageRejected,
    ProviderUnavailable,
)
from cloudmfa.delivery.providers import Providers
from cloudmfa.security.secretbox import SecretBox
from cloudmfa.store import outbox as outbox_repo
from cloudmfa.store.audit import AuditEvent, event_row, record
from cloudmfa.store.db import read_only
from cloudmfa.store.ids import time_ordered_id
from cloudmfa.store.models import audit_events, delivery_outbox
from cloudmfa.store.one_statement import insert_rows
from cloudmfa.store.outages import is_outage

log = logging.getLogger("cloudmfa.delivery")

# A claim holds its row this long; a claimer that died is replaced after it. Longer than any
# provider chain takes (each provider's client has its own shorter timeout).
LEASE_S = 60
# Retry after a transient refusal: 2 s, 4 s, 8 s, … at most 5 minutes.
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
SWEEP_BATCH = 500
# A sweeper leaves a row never tried alone for this long after its commit: the flow hands each
# row to delivery as it commits, so until then the row is on the queue or being sent already,
# and handing it over again is wasted work (in bench (g) the worker spent up to an eighth of its
# time queuing again rows that saq held already, every second while a backlog lasted). A row
# whose hand-over was lost (a crash just after the commit, Redis down) goes out this much later.
HANDOVER_GRACE_S = 5.0
# The record of a message the provider has is tried again through an outage this long at most
# (half the lease: nobody else may claim the row meanwhile), at these waits between tries.
RECORD_PATIENCE_S = LEASE_S / 2
RECORD_WAITS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, *(2.0,) * 12)

Outcome = Literal["sent", "retry", "failed"]


def binding_for_attempt(attempt_id: str, factor_id: str) -> str:
    """The login attempt and factor a code was sent for: where its check looks for failures."""
    return f"attempt:{attempt_id}:{factor_id}"


def binding_for_enrolment(factor_id: str) -> str:
    return f"enrolment:{factor_id}"


def backoff_s(attempts: int) -> float:
    """The wait before try ``attempts + 1``."""
    return float(min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


class Dispatcher(Protocol):
    async def hand_over(self, ids: Iterable[str]) -> None:
        """Start delivering these committed rows (or queue them for a worker)."""
        ...


class DatabaseOutbox:
    def __init__(self, engine: AsyncEngine, secretbox: SecretBox, clock: Clock) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._box = secretbox
        self._clock = clock
        # Set when delivery starts (in serve's lifespan); None in commands that only write rows,
        # whose messages then wait for a sweeper.
        self.dispatcher: Dispatcher | None = None

    async def submit(
        self,
        conn: AsyncConnection,
        message: Message,
        *,
        user_id: str | None = None,
        binding: str | None = None,
    ) -> str:
        row = self._new_row(message, self._clock.now(), user_id=user_id, binding=binding)
        await outbox_repo.insert_row(conn, row)
        return row.id

    async def submit_with_events(
        self,
        message: Message,
        events: Sequence[AuditEvent],
        *,
        user_id: str | None = None,
        binding: str | None = None,
    ) -> str:
        now = self._clock.now()
        row = self._new_row(message, now, user_id=user_id, binding=binding)
        await insert_rows(
            self._engine,
            [
                (delivery_outbox, [outbox_repo.new_row_values(row)]),
                (audit_events, [{**event_row(event), "at": now} for event in events]),
            ],
        )
        return row.id

    def _new_row(
        self, message: Message, now: datetime, *, user_id: str | None, binding: str | None
    ) -> outbox_repo.NewRow:
        row_id = time_ordered_id()
        return outbox_repo.NewRow(
            id=row_id,
            channel=message.channel,
            sealed=seal(self._box, row_id, message),
            created_at=now,
            user_id=user_id,
            binding=_digest(binding) if binding is not None else None,
        )

    async def dispatch(self, *ids: str) -> None:
        """After the commit: hand the rows to delivery. A failure here loses nothing (the
        sweeper finds the rows), so it is logged, not raised into the request."""
        if not ids or self.dispatcher is None:
            return
        try:
            await self.dispatcher.hand_over(ids)
        except Exception as exc:  # noqa: BLE001 - the sweeper delivers them later
            log.warning("could not hand %d message(s) to delivery now: %s", len(ids), exc)

    async def failed_for(self, binding: str) -> bool:
        """True when the newest message sent for this binding failed for good."""
        async with self._reader.connect() as conn:
            return await outbox_repo.latest_status(conn, _digest(binding)) == outbox_repo.FAILED


def _digest(binding: str) -> str:
    return hashlib.sha256(binding.encode()).hexdigest()


def seal(box: SecretBox, row_id: str, message: Message) -> bytes:
    plain = json.dumps(
        {"to": message.to, "subject": message.subject, "text": message.text, "html": message.html}
    ).encode()
    return box.encrypt(plain, context=f"outbox:{row_id}")


def unseal(box: SecretBox, row_id: str, channel: Channel, sealed: bytes) -> Message:
    fields = json.loads(box.decrypt(sealed, context=f"outbox:{row_id}"))
    return Message(channel, fields["to"], fields["subject"], fields["text"], fields["html"])


@dataclass
class Deliverer:
    engine: AsyncEngine
    secretbox: SecretBox
    clock: Clock
    providers: Providers
    max_attempts: int = 5
    # How the record of a send waits between tries (tests pass their own, so nothing sleeps).
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep
    _single: AsyncEngine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._single = read_only(self.engine)  # autocommit: for one statement on its own

    def _one_statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """Where the claim's UPDATE … RETURNING is one statement, it runs on its own; MariaDB
        emulates RETURNING with a locking read, which needs a transaction."""
        if self.engine.dialect.update_returning:
            return self._single.connect()
        return self.engine.begin()

    async def deliver(self, row_id: str) -> Outcome | None:
        """Claim, send and record one message; None when the row was not claimable (sent,
        failed, not yet due, or held by another dispatcher)."""
        now = self.clock.now()
        # The claim and the record of a send are one UPDATE each, atomic on their own: no
        # transaction around them (no BEGIN and COMMIT round trips).
        async with self._one_statement() as conn:
            held = await outbox_repo.claim(
                conn, row_id, now=now, lease_until=now + timedelta(seconds=LEASE_S)
            )
        if held is None:
            return None
        channel: Channel = "sms" if held.channel == "sms" else "email"
        if held.sealed is None:
            return await self._fail(held, channel, "the message is missing")
        message = unseal(self.secretbox, held.id, channel, held.sealed)
        chain = self.providers.chain(channel)
        started = asyncio.get_running_loop().time()
        try:
            receipt = await chain.send(message, idempotency_key=held.id)
        except MessageRejected as exc:
            return await self._fail(held, channel, exc.reason)
        except ProviderUnavailable as exc:
            if held.attempts >= self.max_attempts:
                return await self._fail(held, channel, exc.reason)
            return await self._retry(held, channel, exc)
        seconds = asyncio.get_running_loop().time() - started
        done = self.clock.now()
        await self._record_sent(held, now=done, provider=receipt.provider)
        metrics.code_sent(channel, receipt.provider, "sent", seconds)
        metrics.message_waited(channel, (done - held.created_at).total_seconds())
        return "sent"

    async def _record_sent(
        self, held: outbox_repo.Claimed, *, now: datetime, provider: str
    ) -> None:
        """The provider has the message: its record must not be lost to a passing outage, or
        the row would be sent again once its lease ends (seen in bench (g), where PostgreSQL
        refused the pool's new connections: every such message went out twice). So an outage
        is tried again, well within the lease; anything else, or an outage that lasts, raises."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + RECORD_PATIENCE_S
        for wait in (*RECORD_WAITS_S, None):
            try:
                async with self._single.connect() as conn:
                    await outbox_repo.mark_sent(conn, held, now=now, provider=provider)
                return
            except Exception as exc:
                if wait is None or not is_outage(exc) or loop.time() + wait > give_up_at:
                    raise
                log.warning(
                    "message %s was sent, but its record was refused (%s); trying again",
                    held.id,
                    type(exc).__name__,
                )
            await self.pause(wait)

    async def _retry(
        self, held: outbox_repo.Claimed, channel: Channel, exc: DeliveryError
    ) -> Outcome:
        at = self.clock.now() + timedelta(seconds=backoff_s(held.attempts))
        async with self._single.connect() as conn:
            await outbox_repo.mark_retry(conn, held, at=at, reason=exc.reason)
        metrics.code_sent(channel, exc.provider, "failed")
        log.warning(
            "message %s not delivered (try %d), retrying at %s: %s",
            held.id,
            held.attempts,
            at.isoformat(),
            exc.reason,
        )
        return "retry"

    async def _fail(self, held: outbox_repo.Claimed, channel: Channel, reason: str) -> Outcome:
        """For good: the row says failed, its text is erased, and the audit trail says why
        (the providers' reasons; never the text or the destination)."""
        now = self.clock.now()
        event = AuditEvent(
            type="delivery.failed",
            outcome="failure",
            subject_id=held.user_id,
            details={
                "message_id": held.id,
                "channel": channel,
                "providers": list(self.providers.chain(channel).names),
                "attempts": held.attempts,
                "reason": reason[: outbox_repo.REASON_MAX],
            },
        )
        async with self.engine.begin() as conn:
            if await outbox_repo.mark_failed(conn, held, now=now, reason=reason):
                await record(conn, now, event)
        metrics.code_sent(channel, ",".join(self.providers.chain(channel).names), "failed")
        log.warning("message %s failed for good after %d tries: %s", held.id, held.attempts, reason)
        return "failed"


async def due_messages(engine: AsyncEngine, now: datetime, limit: int = SWEEP_BATCH) -> list[str]:
    """What a sweeper hands over: what is due, but a row never tried only HANDOVER_GRACE_S
    after its commit."""
    untried_before = now - timedelta(seconds=HANDOVER_GRACE_S)
    async with read_only(engine).connect() as conn:
        return await outbox_repo.due_ids(conn, now=now, untried_before=untried_before, limit=limit)

"""The delivery worker's sweeper (delivery/worker.py) on PostgreSQL and a real Redis: it queues
what the database says is due and saq does not hold, and leaves alone a row handed over a moment
ago, a job already on the queue, and a message sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio

import conftest
from cloudmfa.clock import FrozenClock
from cloudmfa.delivery.base import Message, Receipt
from cloudmfa.delivery.chain import ProviderChain
from cloudmfa.delivery.outbox import HANDOVER_GRACE_S, LEASE_S, Deliverer
from cloudmfa.delivery.providers import Providers
from cloudmfa.delivery.worker import QueueDispatcher, open_queue, sweep_into_queue
from cloudmfa.services import Services
from cloudmfa.store import outbox as outbox_repo

BACKENDS = ("postgres-redis",)


class Taker:
    """A provider that takes every message."""

    name = "taker"

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        return Receipt(self.name, idempotency_key)

    async def aclose(self) -> None:
        return None


class Rig:
    def __init__(self, svc: Services, clock: FrozenClock) -> None:
        self.svc, self.clock = svc, clock
        self.queue = open_queue(svc.settings)
        chain = ProviderChain([Taker()])
        self.deliverer = Deliverer(
            svc.engine, svc.secretbox, clock, Providers(email=chain, sms=chain)
        )

    async def commit(self, n: int) -> list[str]:
        async with self.svc.engine.begin() as conn:
            return [
                await self.svc.outbox.submit(conn, Message("sms", f"+1415555{i:04d}", "c", "t"))
                for i in range(n)
            ]

    async def on_queue(self, ids: list[str]) -> list[bool]:
        return [job is not None for job in await self.queue.jobs(ids)]


@pytest_asyncio.fixture(scope="module")
async def rig(backend: dict[str, Any]) -> AsyncIterator[Rig]:
    clock = FrozenClock()
    svc = Services.build(conftest.test_settings(backend, delivery="worker"), clock=clock)
    await svc.start(migrate=True)
    given = Rig(svc, clock)
    try:
        yield given
    finally:
        await given.queue.disconnect()
        await svc.close()


async def test_the_sweep_queues_what_saq_does_not_hold_and_only_that(rig: Rig) -> None:
    handed_over, lost = await rig.commit(3), await rig.commit(2)
    await QueueDispatcher(rig.queue).hand_over(handed_over)
    # Just committed: handed over as they committed, as a rule, so the sweep leaves them.
    assert await sweep_into_queue(rig.queue, rig.deliverer) == 0
    assert await rig.on_queue(lost) == [False, False]
    rig.clock.advance(seconds=HANDOVER_GRACE_S)
    # Past the grace, the two whose hand-over was lost are queued; the three on the queue
    # are not offered again.
    assert await sweep_into_queue(rig.queue, rig.deliverer) == 2
    assert await rig.on_queue(handed_over + lost) == [True] * 5
    assert await sweep_into_queue(rig.queue, rig.deliverer) == 0


async def test_the_sweep_queues_a_lapsed_claim_at_once_and_not_a_sent_message(rig: Rig) -> None:
    [sent, cut_short] = await rig.commit(2)
    assert await rig.deliverer.deliver(sent) == "sent"
    now = rig.clock.now()
    async with rig.svc.engine.begin() as conn:  # a worker that claimed, then died
        await outbox_repo.claim(
            conn, cut_short, now=now, lease_until=now + timedelta(seconds=LEASE_S)
        )
    rig.clock.advance(seconds=LEASE_S)
    assert await sweep_into_queue(rig.queue, rig.deliverer) == 1
    assert await rig.on_queue([sent, cut_short]) == [False, True]


async def test_saq_sweeps_a_job_whose_worker_died_with_it(rig: Rig) -> None:
    # saq's own sweep (which every saq worker runs) takes back a job a worker took off the
    # queue and never ran. saq reads its replies as bytes: on a client that decoded them, the
    # sweep did its work, then failed on `.decode` each time.
    [row] = await rig.commit(1)
    await QueueDispatcher(rig.queue).hand_over([row])
    # Taken by a worker that then died (with what earlier tests left on the queue before it).
    while (taken := await rig.queue.dequeue(timeout=1)) is not None and taken.key != row:
        pass
    assert taken is not None
    swept = await rig.queue.sweep(abort=0.05)
    assert rig.queue.job_id(row) in swept
    [job] = await rig.queue.jobs([row])  # back on the queue: it never ran
    assert job is not None and job.status.name == "QUEUED" and job.error == "swept"

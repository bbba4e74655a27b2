"""Delivery by `cloudmfa worker` (``CLOUDMFA_DELIVERY=worker``): `serve` only queues, the
worker processes send, scaled on their own.

The queue is saq's, on the configured Redis (a lone server or a Sentinel-managed master; saq
takes the redis-py client). A job carries only the outbox row's id, also its key, so a row is
queued at most once at a time; the row itself, in the database, is the truth: the job claims it
(store/outbox.py), so a job run twice, or a job and the sweeper, still send it once. Jobs that
Redis lost (a failover, a flush) are found again by the worker's sweeper, which queues whatever
the database says is due.

Redis Cluster is refused: saq's scripts touch several keys of one queue in one call, which a
Cluster allows only within one hash slot, and its live job updates use pub/sub, which redis-py's
asyncio Cluster client does not offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cloudmfa.delivery.outbox import LEASE_S, Deliverer, due_messages
from cloudmfa.store.redis_url import connect_redis, parse_redis_url

if TYPE_CHECKING:
    from saq.queue.redis import RedisQueue as Queue
    from saq.types import Context

    from cloudmfa.config import Settings

log = logging.getLogger("cloudmfa.delivery")

FUNCTION = "deliver"
SWEEP_INTERVAL_S = 1.0
STOP_GRACE_S = 10
# How long an idle worker's BLMOVE waits on Redis before asking again: shorter than the Redis
# client's socket timeout (store/redis_url.py, 5 s). saq's default, 0, blocks for ever, so the
# client gave up first, and a job that reached Redis as it did was moved to the active list
# with nobody to answer: it stayed there, its key still taken (the sweeper could not queue the
# row again) until saq's own sweep a minute later. Seen in bench (g): 2 of 713 messages late.
DEQUEUE_TIMEOUT_S = 1.0


class QueueUnusable(ValueError):
    """The configuration cannot carry the delivery queue (one line, for the CLI)."""


def queue_name(prefix: str) -> str:
    # saq names its keys saq:<name>:…: the prefix inside keeps deployments (and tests) apart.
    return f"{prefix}delivery"


def open_queue(settings: Settings) -> Queue:
    """saq's queue on the configured Redis. Raises QueueUnusable saying why not."""
    from saq.queue.redis import RedisQueue

    if not settings.redis_url:
        raise QueueUnusable("CLOUDMFA_DELIVERY=worker needs CLOUDMFA_REDIS_URL (the job queue)")
    target = parse_redis_url(settings.redis_url)
    if target.kind == "cluster":
        raise QueueUnusable(
            "CLOUDMFA_DELIVERY=worker cannot use a Redis Cluster (the job queue's scripts need "
            "one server): point CLOUDMFA_REDIS_URL at a server or a Sentinel-managed master"
        )
    # saq reads its replies as bytes (its sweep and schedule call `.decode` on them).
    client: Any = connect_redis(target, decode_responses=False)
    return RedisQueue(client, name=queue_name(settings.redis_key_prefix))


class QueueDispatcher:
    """What `serve` does in worker mode: put each committed row on the queue."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    async def hand_over(self, ids: Iterable[str]) -> None:
        await asyncio.gather(*(enqueue(self.queue, row_id) for row_id in ids))

    async def close(self) -> None:
        await self.queue.disconnect()


async def enqueue(queue: Queue, row_id: str) -> None:
    # ttl=-1: a finished job leaves nothing behind in Redis (the row holds the outcome).
    # retries=1: one run; a job that died is the sweeper's once the row's lease ends.
    await queue.enqueue(
        FUNCTION,
        key=row_id,
        message_id=row_id,
        timeout=LEASE_S,
        retries=1,
        ttl=-1,
    )


async def sweep_into_queue(queue: Queue, deliverer: Deliverer) -> int:
    """Queue every row the database says is due and saq does not hold; how many were queued.

    A backlog older than the sweep's grace (outbox.HANDOVER_GRACE_S) is due and on the queue
    already: one read of their jobs (an MGET) tells which are, where offering each row again
    cost a script call per row (refused, the key being taken), up to SWEEP_BATCH a second. A
    job finished meanwhile is not missed: its row is sent, or due again at its next sweep."""
    ids = await due_messages(deliverer.engine, deliverer.clock.now())
    if not ids:
        return 0
    held = await queue.jobs(ids)
    lost = [row_id for row_id, job in zip(ids, held, strict=True) if job is None]
    await asyncio.gather(*(enqueue(queue, row_id) for row_id in lost))
    return len(lost)


async def _sweep_forever(queue: Queue, deliverer: Deliverer, interval_s: float) -> None:
    while True:
        try:
            await sweep_into_queue(queue, deliverer)
        except Exception as exc:  # noqa: BLE001 - a store outage: try again later
            log.warning("the delivery sweep failed: %s", exc)
        await asyncio.sleep(interval_s)


async def run_worker(
    queue: Queue,
    deliverer: Deliverer,
    *,
    concurrency: int,
    sweep_interval_s: float = SWEEP_INTERVAL_S,
    stop: asyncio.Event | None = None,
) -> None:
    """Deliver queued messages until SIGTERM or SIGINT (saq's worker handles both: it stops
    taking jobs and lets those under way finish for STOP_GRACE_S), or until ``stop`` is set."""
    from saq import Worker

    async def deliver(ctx: Context, *, message_id: str) -> str | None:
        return await deliverer.deliver(message_id)

    sweeper: dict[str, asyncio.Task[None]] = {}

    async def startup(ctx: Context) -> None:
        sweeper["task"] = asyncio.create_task(_sweep_forever(queue, deliverer, sweep_interval_s))

    async def shutdown(ctx: Context) -> None:
        task = sweeper.pop("task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    worker = Worker(
        queue,
        functions=[(FUNCTION, deliver)],
        concurrency=concurrency,
        startup=startup,
        shutdown=shutdown,
        shutdown_grace_period_s=STOP_GRACE_S,
        dequeue_timeout=DEQUEUE_TIMEOUT_S,
    )
    running = asyncio.create_task(worker.start())
    if stop is None:
        await running
        return
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not running.done():
        await worker.stop()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    waiting.cancel()

"""Delivery inside the serving process (the zero-configuration mode): a task per message after
its commit, a bounded number sending at once, and a sweeper for what stayed queued.

Stopping is bounded: the sweeper is cancelled between two sweeps, the deliveries under way get
a grace period, and whatever is still sending then is cancelled. A cancelled delivery keeps its
claim until the lease ends, and the next dispatcher (this process restarted, or another
replica) takes the row again then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from cloudmfa.delivery.outbox import Deliverer, due_messages

log = logging.getLogger("cloudmfa.delivery")

SWEEP_INTERVAL_S = 1.0
STOP_GRACE_S = 5.0
CANCEL_WAIT_S = 1.0


class InProcessDispatcher:
    def __init__(
        self,
        deliverer: Deliverer,
        *,
        concurrency: int = 32,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._deliverer = deliverer
        self._slots = asyncio.Semaphore(concurrency)
        self._sweep_interval_s = sweep_interval_s
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._sweep_interval_s > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="delivery-sweeper")

    async def hand_over(self, ids: Iterable[str]) -> None:
        for row_id in ids:
            self._spawn(row_id)

    def _spawn(self, row_id: str) -> None:
        if self._stopping or row_id in self._in_flight:
            return  # a row this process is already on (the sweeper found it queued)
        task = asyncio.create_task(self._deliver(row_id), name=f"delivery-{row_id}")
        self._in_flight[row_id] = task
        task.add_done_callback(lambda _: self._in_flight.pop(row_id, None))

    async def _deliver(self, row_id: str) -> None:
        async with self._slots:
            try:
                await self._deliverer.deliver(row_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The row keeps its claim; the sweeper takes it again once the lease ends.
                log.exception("delivery of message %s stopped by an error", row_id)

    async def sweep(self) -> int:
        """Hand over every row due now; how many were new to this process."""
        ids = await due_messages(self._deliverer.engine, self._deliverer.clock.now())
        fresh = [i for i in ids if i not in self._in_flight]
        await self.hand_over(fresh)
        return len(fresh)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - a database outage: try again later
                log.warning("the delivery sweep failed: %s", exc)
            await asyncio.sleep(self._sweep_interval_s)

    async def drain(self) -> None:
        """Wait until nothing is in flight (tests and the benchmark)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight.values()), return_exceptions=True)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        pending = set(self._in_flight.values())
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
            log.warning("stopped %d delivery(ies) under way; they are retried later", len(pending))

"""Starting and stopping delivery with `serve` (its lifespan): in-process, or queueing for
`cloudmfa worker`, as CLOUDMFA_DELIVERY says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudmfa.delivery.in_process import STOP_GRACE_S, InProcessDispatcher
from cloudmfa.delivery.outbox import DatabaseOutbox, Deliverer
from cloudmfa.delivery.providers import Providers, build_providers
from cloudmfa.delivery.worker import QueueDispatcher, open_queue

if TYPE_CHECKING:
    from cloudmfa.services import Services


@dataclass
class RunningDelivery:
    outbox: DatabaseOutbox
    dispatcher: InProcessDispatcher | QueueDispatcher
    providers: Providers | None = None

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Bounded: at most ``grace_s`` for deliveries under way, then they are cancelled."""
        self.outbox.dispatcher = None
        if isinstance(self.dispatcher, InProcessDispatcher):
            await self.dispatcher.stop(grace_s)
        else:
            await self.dispatcher.close()
        if self.providers is not None:
            await self.providers.aclose()


def deliverer_for(svc: Services, providers: Providers) -> Deliverer:
    return Deliverer(
        engine=svc.engine,
        secretbox=svc.secretbox,
        clock=svc.clock,
        providers=providers,
        max_attempts=svc.settings.delivery_max_attempts,
    )


def start_delivery(svc: Services, providers: Providers | None = None) -> RunningDelivery | None:
    """None when the services carry another outbox (tests that record messages).
    ``providers`` replaces the configured ones (tests)."""
    outbox = svc.outbox
    if not isinstance(outbox, DatabaseOutbox):
        return None
    if svc.settings.delivery == "worker":
        queueing = QueueDispatcher(open_queue(svc.settings))
        outbox.dispatcher = queueing
        return RunningDelivery(outbox, queueing)
    providers = providers or build_providers(svc.settings)
    dispatcher = InProcessDispatcher(
        deliverer_for(svc, providers), concurrency=svc.settings.delivery_concurrency
    )
    dispatcher.start()
    outbox.dispatcher = dispatcher
    return RunningDelivery(outbox, dispatcher, providers)

"""An outbox that keeps what the flows hand it, so a test reads codes, links and notices from
the delivered message; and an app built around it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.app import create_app
from cloudmfa.clock import FrozenClock
from cloudmfa.config import Settings
from cloudmfa.delivery.base import Message
from cloudmfa.flows.send_limits import cooldown_key
from cloudmfa.services import Services
from cloudmfa.store.audit import AuditEvent, record
from conftest import Api


class RecordingOutbox:
    def __init__(self) -> None:
        self.services: Services | None = None  # whose database takes submit_with_events' events
        self.sent: list[Message] = []
        self.bindings: list[str | None] = []  # what each message's failure is reported to
        self.user_ids: list[str | None] = []
        self.dispatched: list[str] = []  # ids handed to delivery after their commit
        self.failed: set[str] = set()  # bindings whose delivery a test declares failed

    async def submit(
        self,
        conn: AsyncConnection,
        message: Message,
        *,
        user_id: str | None = None,
        binding: str | None = None,
    ) -> str:
        self.sent.append(message)
        self.bindings.append(binding)
        self.user_ids.append(user_id)
        return str(len(self.sent))

    async def submit_with_events(
        self,
        message: Message,
        events: Sequence[AuditEvent],
        *,
        user_id: str | None = None,
        binding: str | None = None,
    ) -> str:
        assert self.services is not None, "recording_api sets the services"
        async with self.services.engine.begin() as conn:
            await record(conn, self.services.clock.now(), *events)
            return await self.submit(conn, message, user_id=user_id, binding=binding)

    async def dispatch(self, *ids: str) -> None:
        self.dispatched.extend(ids)

    async def failed_for(self, binding: str) -> bool:
        return binding in self.failed

    def to(self, address: str) -> list[Message]:
        return [m for m in self.sent if m.to == address]

    def last_to(self, address: str) -> Message:
        sent = self.to(address)
        assert sent, f"nothing was sent to {address}"
        return sent[-1]

    def code_to(self, address: str) -> str:
        """The code of the last message to ``address``."""
        text = self.last_to(address).text
        match = re.search(r"\b(\d{6,8})\b", text)
        assert match, text
        return match.group(1)


@asynccontextmanager
async def recording_api(settings: Settings) -> AsyncIterator[tuple[Api, RecordingOutbox]]:
    clock = FrozenClock()
    outbox = RecordingOutbox()
    svc = Services.build(settings, clock=clock, outbox=outbox)
    outbox.services = svc
    app = create_app(settings, services=svc)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
        base_url="http://testserver",
    )
    async with app.router.lifespan_context(app), client:
        yield Api(client=client, svc=svc, clock=clock), outbox


async def pass_cooldown(api: Api, factor_id: str) -> None:
    """As if the resend cooldown had passed (a Redis TTL follows the real clock, not the test's)."""
    await api.svc.ephemeral.delete(cooldown_key(factor_id))


def new_phone(area: str = "415") -> str:
    """A US number of its own for each test (the destination limit counts per number)."""
    import secrets

    from cloudmfa.errors import ValidationFailed
    from cloudmfa.factors.sms.phone import parse_phone

    while True:
        candidate = f"+1{area}{secrets.choice('23456789')}{secrets.randbelow(10**6):06d}"
        try:
            return parse_phone(candidate).e164
        except ValidationFailed:
            continue


async def events_of(api: Api, user_id: str | None, type_: str) -> list[dict[str, Any]]:
    """The audit events of that type about that user (any user: None), newest first."""
    from cloudmfa.store.audit import list_events

    async with api.svc.reader.connect() as conn:
        rows = await list_events(conn, user_id=user_id, type_=type_, limit=100)
    return [row for row in rows if user_id is not None or row["subject_id"] is None]

"""A message the provider took is recorded as sent even if the database has a passing outage
right then (delivery/outbox.py, ``Deliverer._record_sent``): otherwise the row stays claimed and
is sent a second time once its lease ends. Seen in bench (g): PostgreSQL past max_connections
refused the pool's new connections, and every message whose record was refused went out twice.

On a real PostgreSQL: while the provider holds the message, the service's connections are
terminated and its role may open none (SQLSTATE 53300, as past max_connections)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest
import pytest_asyncio

import conftest
from cloudmfa.clock import FrozenClock
from cloudmfa.delivery.base import Message, Receipt
from cloudmfa.delivery.chain import ProviderChain
from cloudmfa.delivery.outbox import Deliverer
from cloudmfa.delivery.providers import Providers
from cloudmfa.services import Services
from cloudmfa.store import outbox as outbox_repo

BACKENDS = ("postgres-redis",)


@dataclass
class Outage:
    """Cuts the service's role off PostgreSQL, and lets it back in."""

    admin: asyncpg.Connection
    role: str

    async def begin(self) -> None:
        await self.admin.execute(f"ALTER ROLE {self.role} CONNECTION LIMIT 0")
        await self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", self.role
        )

    async def end(self) -> None:
        await self.admin.execute(f"ALTER ROLE {self.role} CONNECTION LIMIT -1")


@dataclass
class OutageDuringSend:
    """A provider that takes every message, the database going down while it does."""

    outage: Outage
    name: str = "taker"
    taken: list[str] = field(default_factory=list)

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        self.taken.append(idempotency_key)
        await self.outage.begin()
        return Receipt(self.name, idempotency_key)

    async def aclose(self) -> None:
        return None


@dataclass
class Rig:
    svc: Services
    outage: Outage
    provider: OutageDuringSend

    def deliverer(self, pause: object) -> Deliverer:
        chain = ProviderChain([self.provider])
        return Deliverer(
            self.svc.engine,
            self.svc.secretbox,
            self.svc.clock,
            Providers(email=chain, sms=chain),
            pause=pause,  # type: ignore[arg-type]
        )

    async def commit(self) -> str:
        async with self.svc.engine.begin() as conn:
            return await self.svc.outbox.submit(conn, Message("sms", "+14155550100", "c", "t"))

    async def status(self, row_id: str) -> str | None:
        async with self.svc.reader.connect() as conn:
            return await outbox_repo.status_of(conn, row_id)


@pytest_asyncio.fixture(scope="module")
async def rig(backend: dict[str, object]) -> AsyncIterator[Rig]:
    """The service on a database of its own role's, a role that can be cut off."""
    role = f"cloudmfa_cut_{secrets.token_hex(4)}"
    name = f"cloudmfa_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(conftest.PG_DSN)
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    await admin.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    host = conftest.PG_DSN.split("@", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql://{role}@{host}/{name}"
    settings = conftest.test_settings({**backend, "database_url": url})
    svc = Services.build(settings, clock=FrozenClock())
    await svc.start(migrate=True)
    outage = Outage(admin, role)
    try:
        yield Rig(svc, outage, OutageDuringSend(outage))
    finally:
        await outage.end()
        await svc.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_sent_message_is_recorded_once_the_outage_passes(rig: Rig) -> None:
    waits: list[float] = []

    async def pause(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # three refusals: the dropped connection, then two of no room
            await rig.outage.end()

    row_id = await rig.commit()
    assert await rig.deliverer(pause).deliver(row_id) == "sent"
    assert rig.provider.taken.count(row_id) == 1
    assert len(waits) == 3 and waits == sorted(waits)
    assert await rig.status(row_id) == outbox_repo.SENT  # nothing for a sweeper to send again


async def test_an_outage_that_lasts_is_not_waited_out_past_the_lease(rig: Rig) -> None:
    waits: list[float] = []

    async def pause(seconds: float) -> None:
        waits.append(seconds)

    row_id = await rig.commit()
    try:
        with pytest.raises(Exception) as refused:
            await rig.deliverer(pause).deliver(row_id)
    finally:
        await rig.outage.end()
    assert "too many connections" in str(refused.value)
    assert 0 < sum(waits) < 60  # given up within the claim's lease (LEASE_S)
    assert await rig.status(row_id) == outbox_repo.SENDING  # the lease's end decides, as before

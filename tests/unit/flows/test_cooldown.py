"""The per-factor resend cooldown (API.md "Throttling"), which a message's send limits start
(flows/send_limits.py ``take_send``), run on the in-process store and an empty in-memory
SQLite database (a cooldown's refusal writes no audit event): no app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloudmfa.clock import FrozenClock
from cloudmfa.config import Settings
from cloudmfa.delivery.base import Message
from cloudmfa.errors import RateLimited
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.send_limits import destination_key, sms_budget_key, take_send
from cloudmfa.store.ephemeral import EphemeralStore, MemoryStore

MESSAGE = Message("sms", "+14155550100", "Your code", "Your code is 123456")


@dataclass
class Deps:
    settings: Settings
    clock: FrozenClock
    engine: AsyncEngine
    reader: AsyncEngine
    ephemeral: EphemeralStore


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    yield engine
    await engine.dispose()


def deps(engine: AsyncEngine, clock: FrozenClock, **values: Any) -> Deps:
    settings = Settings(_env_file=None, destination_hourly_limit=100, **values)  # type: ignore[call-arg]
    return Deps(settings, clock, engine, engine, MemoryStore(clock))


async def send(given: Deps, factor_id: str) -> None:
    await take_send(given, RequestInfo(), MESSAGE, user_id=None, cooldown_for=factor_id)


async def test_one_message_per_factor_per_cooldown(engine: AsyncEngine) -> None:
    clock = FrozenClock(datetime(2026, 12, 1, tzinfo=UTC))
    given = deps(engine, clock, otp_resend_cooldown_s=30)
    await send(given, "f1")

    with pytest.raises(RateLimited) as refused:
        await send(given, "f1")
    assert refused.value.kind == "resend_cooldown"
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 30

    await send(given, "f2")  # another factor has a cooldown of its own
    clock.advance(seconds=31)
    await send(given, "f1")


async def test_a_cooldown_of_zero_sends_whenever_asked(engine: AsyncEngine) -> None:
    given = deps(engine, FrozenClock(), otp_resend_cooldown_s=0)
    for _ in range(3):
        await send(given, "f1")


async def test_a_send_refused_by_the_cooldown_counts_against_no_limit(engine: AsyncEngine) -> None:
    given = deps(engine, FrozenClock(), otp_resend_cooldown_s=30)
    await send(given, "f1")
    for _ in range(5):
        with pytest.raises(RateLimited):
            await send(given, "f1")

    counts = [destination_key(MESSAGE), sms_budget_key("US"), sms_budget_key("*")]
    assert [await given.ephemeral.get(key) for key in counts] == ["1", "1", "1"]

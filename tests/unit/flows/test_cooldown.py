"""The per-factor resend cooldown (API.md "Throttling"), run on the two things it uses (the
settings and the ephemeral store, flows/deps.py ``Cooldowns``): no database, no app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from cloudmfa.clock import FrozenClock
from cloudmfa.config import Settings
from cloudmfa.errors import RateLimited
from cloudmfa.flows.second_factor import start_cooldown
from cloudmfa.store.ephemeral import EphemeralStore, MemoryStore


@dataclass
class Deps:
    settings: Settings
    ephemeral: EphemeralStore


def deps(clock: FrozenClock, **values: Any) -> Deps:
    return Deps(Settings(_env_file=None, **values), MemoryStore(clock))  # type: ignore[call-arg]


async def test_one_message_per_factor_per_cooldown() -> None:
    clock = FrozenClock(datetime(2026, 12, 1, tzinfo=UTC))
    given = deps(clock, otp_resend_cooldown_s=30)
    await start_cooldown(given, "f1")

    with pytest.raises(RateLimited) as refused:
        await start_cooldown(given, "f1")
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 30

    await start_cooldown(given, "f2")  # another factor has a cooldown of its own
    clock.advance(seconds=31)
    await start_cooldown(given, "f1")


async def test_a_cooldown_of_zero_sends_whenever_asked() -> None:
    given = deps(FrozenClock(), otp_resend_cooldown_s=0)
    for _ in range(3):
        await start_cooldown(given, "f1")

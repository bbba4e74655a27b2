"""The ephemeral store, both kinds: the in-process one, and the real Redis through redis-py."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cloudmfa.clock import FrozenClock
from cloudmfa.store.ephemeral import EphemeralStore, MemoryStore, RedisStore
from conftest import REDIS_URL, drop_redis_prefix


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[EphemeralStore]:
    if request.param == "memory":
        yield MemoryStore(FrozenClock())
        return
    prefix = f"test-store-{secrets.token_hex(4)}:"
    redis_store = RedisStore(REDIS_URL, prefix=prefix)
    yield redis_store
    await redis_store.close()
    await drop_redis_prefix(prefix)

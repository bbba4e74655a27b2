"""Short-lived shared state: single-use tokens, counters, revocations.

Two implementations of one small interface, chosen by ``CLOUDMFA_REDIS_URL``: Redis, shared by
every worker and replica, and an in-process dictionary for a single process. Counters are atomic
in both (INCR and its expiry in one server-side step), never read-modify-write.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from redis.asyncio import Redis

from cloudmfa.clock import Clock


class EphemeralStore(Protocol):
    async def incr(self, key: str, ttl_s: int) -> int:
        """Add one to a counter and return it; the first increment starts its ``ttl_s`` life."""
        ...

    async def decr_if_exists(self, key: str) -> None:
        """Take one off a live counter (never creating one, never touching its expiry)."""
        ...

    async def get_and_count(self, key: str, counter: str, ttl_s: int) -> tuple[str | None, int]:
        """Read ``key`` and, when it exists, add one to ``counter`` (as ``incr``), in one step."""
        ...

    async def pop_and_delete(self, key: str, *others: str) -> str | None:
        """``pop(key)`` and delete ``others`` in one step."""
        ...

    async def ttl(self, key: str) -> int:
        """Seconds until ``key`` expires; 0 when it does not exist."""
        ...

    async def set(self, key: str, value: str, ttl_s: int) -> None: ...

    async def set_if_absent(self, key: str, value: str, ttl_s: int) -> bool: ...

    async def get(self, key: str) -> str | None: ...

    async def exists_any(self, *keys: str) -> bool: ...

    async def pop(self, key: str) -> str | None:
        """Read and delete in one step: the value is handed out at most once."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """One process only: state is lost on restart and invisible to other workers."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _live(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._now():
            del self._data[key]
            return None
        return item[0]

    def _sweep(self) -> None:
        # Bounded memory: expired entries go whenever the table grows large.
        if len(self._data) > 100_000:
            now = self._now()
            for key in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[key]

    async def incr(self, key: str, ttl_s: int) -> int:
        async with self._lock:
            current = self._live(key)
            if current is None:
                self._sweep()
                self._data[key] = ("1", self._now() + ttl_s)
                return 1
            value = int(current) + 1
            self._data[key] = (str(value), self._data[key][1])
            return value

    async def get_and_count(self, key: str, counter: str, ttl_s: int) -> tuple[str | None, int]:
        value = self._live(key)
        if value is None:
            return None, 0
        return value, await self.incr(counter, ttl_s)

    async def pop_and_delete(self, key: str, *others: str) -> str | None:
        value = await self.pop(key)
        await self.delete(*others)
        return value

    async def decr_if_exists(self, key: str) -> None:
        async with self._lock:
            current = self._live(key)
            if current is not None:
                self._data[key] = (str(int(current) - 1), self._data[key][1])

    async def ttl(self, key: str) -> int:
        if self._live(key) is None:
            return 0
        return max(1, int(self._data[key][1] - self._now() + 0.999))

    async def set(self, key: str, value: str, ttl_s: int) -> None:
        self._sweep()
        self._data[key] = (value, self._now() + ttl_s)

    async def set_if_absent(self, key: str, value: str, ttl_s: int) -> bool:
        async with self._lock:
            if self._live(key) is not None:
                return False
            await self.set(key, value, ttl_s)
            return True

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def exists_any(self, *keys: str) -> bool:
        return any(self._live(key) is not None for key in keys)

    async def pop(self, key: str) -> str | None:
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


# INCR, then start the expiry only on the first increment, in one atomic server-side step.
_INCR_WITH_TTL = """
local value = redis.call('INCR', KEYS[1])
if value == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return value
"""

_GET_AND_COUNT = """
local value = redis.call('GET', KEYS[1])
if not value then return {false, 0} end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return {value, count}
"""

_DECR_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return false
"""


class RedisStore:
    """Shared by every worker and replica that points at the same Redis."""

    def __init__(self, url: str, *, prefix: str = "cloudmfa:") -> None:
        self._redis: Redis = Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        self._prefix = prefix
        self._incr = self._redis.register_script(_INCR_WITH_TTL)
        self._decr = self._redis.register_script(_DECR_IF_EXISTS)
        self._get_and_count = self._redis.register_script(_GET_AND_COUNT)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def incr(self, key: str, ttl_s: int) -> int:
        return int(await self._incr(keys=[self._k(key)], args=[ttl_s]))

    async def decr_if_exists(self, key: str) -> None:
        await self._decr(keys=[self._k(key)])

    async def get_and_count(self, key: str, counter: str, ttl_s: int) -> tuple[str | None, int]:
        value, count = await self._get_and_count(
            keys=[self._k(key), self._k(counter)], args=[ttl_s]
        )
        return (None if value is None else str(value)), int(count)

    async def pop_and_delete(self, key: str, *others: str) -> str | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.getdel(self._k(key))
            if others:
                pipe.delete(*(self._k(k) for k in others))
            results = await pipe.execute()
        return None if results[0] is None else str(results[0])

    async def ttl(self, key: str) -> int:
        remaining = int(await self._redis.ttl(self._k(key)))
        return max(remaining, 0)

    async def set(self, key: str, value: str, ttl_s: int) -> None:
        await self._redis.set(self._k(key), value, ex=ttl_s)

    async def set_if_absent(self, key: str, value: str, ttl_s: int) -> bool:
        return bool(await self._redis.set(self._k(key), value, ex=ttl_s, nx=True))

    async def get(self, key: str) -> str | None:
        value = await self._redis.get(self._k(key))
        return None if value is None else str(value)

    async def exists_any(self, *keys: str) -> bool:
        return bool(await self._redis.exists(*(self._k(k) for k in keys)))

    async def pop(self, key: str) -> str | None:
        value = await self._redis.getdel(self._k(key))
        return None if value is None else str(value)

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._redis.delete(*(self._k(k) for k in keys))

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def create_store(redis_url: str | None, *, prefix: str, clock: Clock) -> EphemeralStore:
    if redis_url:
        return RedisStore(redis_url, prefix=prefix)
    return MemoryStore(clock)

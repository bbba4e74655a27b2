"""Throttling (API.md "Throttling"): consecutive failures per account, requests per client IP.

Both live in the ephemeral store (Redis when configured), so every worker and replica shares
them. The account counter reserves an attempt *before* the password or code is checked and
gives it back only when the check succeeds: however many wrong guesses arrive in parallel, no
more than the limit are ever evaluated.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.bridge import RedisBridge
from limits.aio.strategies import MovingWindowRateLimiter

from cloudmfa.errors import RateLimited
from cloudmfa.store.ephemeral import EphemeralStore
from cloudmfa.store.redis_client import RedisClient, Script


def account_key(email: str) -> str:
    # Keyed by the normalised email, so unknown addresses are throttled exactly like real
    # accounts and a 429 reveals nothing about which exist.
    return "acct_fail:" + hashlib.sha256(email.encode("utf-8")).hexdigest()


class AccountThrottle:
    def __init__(self, store: EphemeralStore, *, max_failures: int, window_s: int) -> None:
        self._store = store
        self.max_failures = max_failures
        self.window_s = window_s

    async def reserve(self, email: str) -> None:
        """Count an attempt in advance; raise RateLimited when the account is at its limit."""
        key = account_key(email)
        count = await self._store.incr(key, self.window_s)
        if count > self.max_failures:
            await self._store.decr_if_exists(key)  # a refused attempt is not a failure
            raise RateLimited(
                "Too many failed attempts for this account; try again later.",
                retry_after=await self._store.ttl(key) or self.window_s,
            )

    async def release(self, email: str) -> None:
        """The reserved attempt succeeded (a correct password): it is not a failure."""
        await self._store.decr_if_exists(account_key(email))

    @staticmethod
    def key_for(email: str) -> str:
        """The store key of the account's count, for callers that clear it with other keys."""
        return account_key(email)

    async def reset(self, email: str) -> None:
        """A completed sign-in clears the count."""
        await self._store.delete(account_key(email))


class IpRateLimiter:
    """Requests per client IP on the authentication endpoints, with the `limits` library."""

    def __init__(
        self,
        limit: str,
        *,
        redis_url: str | None,
        prefix: str,
        redis: RedisClient | None = None,
    ) -> None:
        self.item: RateLimitItem = parse(limit)
        storage: Storage
        if redis_url:
            storage = _LimitsRedisStorage(redis_url, prefix + "ip", redis or RedisClient(redis_url))
        else:
            storage = MemoryStorage()
        # A moving window is exact (never more than the limit in any 60 s), unlike a
        # sliding-window counter, which lets up to twice the rate through at a boundary. It
        # keeps one entry per request, so its cost grows with the limit, not with traffic.
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, ip: str) -> None:
        if await self._limiter.hit(self.item, ip):
            return
        stats = await self._limiter.get_window_stats(self.item, ip)
        raise RateLimited(
            "Too many requests from this address; slow down.",
            retry_after=max(1, int(stats.reset_time - time.time()) + 1),
        )


class _LimitsRedisStorage(RedisStorage):
    """The `limits` library's Redis storage, its Lua scripts (which do all the rate-limiting
    work) sent through the store's lean client instead of redis-py: a hit is one script call
    on every request to /auth/*, and redis-py's per-call overhead was most of its cost."""

    _SCRIPTS = {
        "lua_moving_window": RedisBridge.SCRIPT_MOVING_WINDOW,
        "lua_acquire_moving_window": RedisBridge.SCRIPT_ACQUIRE_MOVING_WINDOW,
        "lua_sliding_window": RedisBridge.SCRIPT_SLIDING_WINDOW,
        "lua_acquire_sliding_window": RedisBridge.SCRIPT_ACQUIRE_SLIDING_WINDOW,
        "lua_clear_keys": RedisBridge.SCRIPT_CLEAR_KEYS,
        "lua_incr_expire": RedisBridge.SCRIPT_INCR_EXPIRE,
    }

    def __init__(self, redis_url: str, key_prefix: str, client: RedisClient) -> None:
        super().__init__("async+" + redis_url, implementation="redispy", key_prefix=key_prefix)
        for name, source in self._SCRIPTS.items():
            setattr(self.bridge, name, _ScriptCall(client, Script(source.decode())))


class _ScriptCall:
    """Called the way the bridge calls a redis-py ``Script``: ``(keys, args)``."""

    def __init__(self, client: RedisClient, script: Script) -> None:
        self._client = client
        self._script = script

    async def __call__(
        self, keys: Sequence[str] | None = None, args: Sequence[Any] | None = None
    ) -> Any:
        return await self._client.run_script(self._script, list(keys or ()), list(args or ()))

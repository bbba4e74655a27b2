"""Throttling (API.md "Throttling"): consecutive failures per account, requests per client IP.

Both live in the ephemeral store (Redis when configured), so every worker and replica shares
them. The account counter reserves an attempt *before* the password or code is checked and
gives it back only when the check succeeds: however many wrong guesses arrive in parallel, no
more than the limit are ever evaluated.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from cloudmfa.errors import RateLimited
from cloudmfa.store.ephemeral import EphemeralStore, Reservation, reporting_unavailable
from cloudmfa.store.redis_url import (
    TIMEOUT_S,
    RedisClient,
    RedisTarget,
    connect_redis,
    parse_redis_url,
)

ACCOUNT_TAG_LENGTH = 32


def account_tag(email: str) -> str:
    """The account's mark in the store, from the normalised email (unknown addresses are
    throttled exactly like real accounts, so a 429 reveals nothing about which exist). Its
    login attempts' keys carry it too, so that one script can count an attempt's try and the
    account's failure together (one Redis Cluster slot)."""
    return hashlib.sha256(email.encode("utf-8")).hexdigest()[:ACCOUNT_TAG_LENGTH]


def account_key(email: str) -> str:
    return account_key_of_tag(account_tag(email))


def account_key_of_tag(tag: str) -> str:
    return f"acct_fail:{{{tag}}}"


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
            raise self.refused(await self._store.ttl(key) or self.window_s)

    def reservation(self, tag: str) -> Reservation:
        """One attempt of the account with this tag, to take in the same step as other work
        (``EphemeralStore.begin_use``); refused, it raises nothing: see ``refused``."""
        return Reservation(account_key_of_tag(tag), self.window_s, self.max_failures)

    @staticmethod
    def refused(retry_after: int) -> RateLimited:
        return RateLimited(
            "Too many failed attempts for this account; try again later.",
            retry_after=max(1, retry_after),
            kind="account",
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
        storage: Storage = MemoryStorage()
        if redis_url:
            storage = _redis_storage(parse_redis_url(redis_url), prefix + "ip", redis)
        # A moving window is exact (never more than the limit in any 60 s), unlike a
        # sliding-window counter, which lets up to twice the rate through at a boundary. It
        # keeps one entry per request, so its cost grows with the limit, not with traffic.
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, ip: str) -> None:
        with reporting_unavailable:
            if await self._limiter.hit(self.item, ip):
                return
            stats = await self._limiter.get_window_stats(self.item, ip)
        raise RateLimited(
            "Too many requests from this address; slow down.",
            retry_after=max(1, int(stats.reset_time - time.time()) + 1),
            kind="ip",
        )


def _redis_storage(target: RedisTarget, key_prefix: str, shared: RedisClient | None) -> Storage:
    """The `limits` storage for the target, through its public constructors. A server, or the
    master Sentinel names, shares the store's connection pool (its constructor takes one); a
    Cluster gets a client of its own from the seeds, since RedisClusterStorage builds its own."""
    if target.kind == "cluster":
        seeds = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in target.nodes)
        credentials: dict[str, Any] = {"username": target.username, "password": target.password}
        return RedisClusterStorage(
            f"async+redis+cluster://{seeds}",
            implementation="redispy",
            key_prefix=key_prefix,
            ssl=target.tls,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            reinitialize_steps=0,  # no client reset on MOVED, as the store's (redis_url.py)
            **{name: value for name, value in credentials.items() if value is not None},
        )
    client = shared if isinstance(shared, Redis) else connect_redis(target)
    assert isinstance(client, Redis)
    pool: dict[str, Any] = {"connection_pool": client.connection_pool}
    return RedisStorage("async+redis://", implementation="redispy", key_prefix=key_prefix, **pool)

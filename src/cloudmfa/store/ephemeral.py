"""Short-lived shared state: single-use tokens, counters, revocations.

Two implementations of one small interface, chosen by ``CLOUDMFA_REDIS_URL``: Redis, shared by
every worker and replica, and an in-process dictionary for a single process. Counters are atomic
in both (INCR and its expiry in one server-side step), never read-modify-write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast

import redis
from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster
from redis.exceptions import ClusterDownError

from cloudmfa.clock import Clock
from cloudmfa.store.redis_url import RedisClient, connect_redis, parse_redis_url


@dataclass(frozen=True, slots=True)
class Reservation:
    """One unit of a limited count, taken ahead of the work it limits (an account's failed
    attempts): a count already at ``limit`` refuses it, untouched."""

    key: str
    ttl_s: int  # the count's window, started by its first unit
    limit: int


@dataclass(frozen=True, slots=True)
class Cooldown:
    """A step allowed once per ``ttl_s`` (one message per factor per cooldown): a key set for
    that long, which refuses the step while it lives."""

    key: str
    ttl_s: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """What refused ``take_all``, and the seconds until its window ends."""

    refused_by: Cooldown | Reservation
    retry_after: int


@dataclass(frozen=True, slots=True)
class Use:
    """What ``begin_use`` found and took."""

    value: str | None  # None: the key does not exist
    uses: int  # the count after this use; 0: the lease is held by another, nothing counted
    reserved: bool  # the reservation's unit was taken
    retry_after: int = 0  # the reservation was refused: seconds until its window ends


class EphemeralStore(Protocol):
    async def incr(self, key: str, ttl_s: int) -> int:
        """Add one to a counter and return it; the first increment starts its ``ttl_s`` life."""
        ...

    async def decr_if_exists(self, *keys: str) -> None:
        """Take one off each live counter (never creating one, never touching its expiry), in
        one step (the keys share a hash tag)."""
        ...

    async def take_all(
        self, reservations: Sequence[Reservation], *, cooldown: Cooldown | None = None
    ) -> Refusal | None:
        """In one step: start ``cooldown`` (refused while it runs), then take one unit of each
        reservation, all or none: one whose count is at its limit refuses, and the units
        taken before it are given back. None when everything was taken; else what refused.
        A refusing reservation leaves the cooldown started, as separate steps in that order
        would. All the keys share a hash tag."""
        ...

    async def count_then_set(
        self, counter: str, *, limit: int, key: str, value: str, ttl_s: int
    ) -> int:
        """Add one to ``counter`` (as ``incr`` with ``ttl_s``) and, unless the count is then
        past ``limit``, set ``key`` to ``value`` for ``ttl_s``; in one step (the two keys share
        a hash tag). The count."""
        ...

    async def begin_use(
        self,
        key: str,
        *,
        counter: str,
        lease: str,
        ttl_s: int,
        lease_s: int,
        max_uses: int | None = None,
        reserve: Reservation | None = None,
    ) -> Use:
        """Read ``key`` and, when it exists and nobody holds ``lease``, take the lease for
        ``lease_s`` and add one to ``counter`` (as ``incr`` with ``ttl_s``); then, unless that
        count is past ``max_uses``, take one unit of ``reserve``. All in one step."""
        ...

    async def pop_and_delete(self, key: str, *others: str) -> str | None:
        """``pop(key)`` and delete ``others`` in one step."""
        ...

    async def set_and_release(self, key: str, value: str, ttl_s: int, *, counter: str) -> None:
        """``set`` and ``decr_if_exists(counter)`` in one step (``counter`` shares ``key``'s
        hash tag)."""
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
            return self._incr_now(key, ttl_s)

    def _incr_now(self, key: str, ttl_s: int) -> int:
        """``incr`` for a caller that holds the lock."""
        current = self._live(key)
        if current is None:
            self._sweep()
            self._data[key] = ("1", self._now() + ttl_s)
            return 1
        value = int(current) + 1
        self._data[key] = (str(value), self._data[key][1])
        return value

    def _decr_now(self, key: str) -> None:
        current = self._live(key)
        if current is not None:
            self._data[key] = (str(int(current) - 1), self._data[key][1])

    async def take_all(
        self, reservations: Sequence[Reservation], *, cooldown: Cooldown | None = None
    ) -> Refusal | None:
        async with self._lock:  # nothing awaited inside: one step for the other tasks
            if cooldown is not None:
                if self._live(cooldown.key) is not None:
                    return Refusal(cooldown, self._ttl_now(cooldown.key))
                self._sweep()
                self._data[cooldown.key] = ("1", self._now() + cooldown.ttl_s)
            for taken, reservation in enumerate(reservations):
                if self._incr_now(reservation.key, reservation.ttl_s) > reservation.limit:
                    retry_after = self._ttl_now(reservation.key)
                    for given_back in reservations[: taken + 1]:
                        self._decr_now(given_back.key)
                    return Refusal(reservation, retry_after)
            return None

    async def count_then_set(
        self, counter: str, *, limit: int, key: str, value: str, ttl_s: int
    ) -> int:
        async with self._lock:
            count = self._incr_now(counter, ttl_s)
            if count <= limit:
                self._sweep()
                self._data[key] = (value, self._now() + ttl_s)
            return count

    async def begin_use(
        self,
        key: str,
        *,
        counter: str,
        lease: str,
        ttl_s: int,
        lease_s: int,
        max_uses: int | None = None,
        reserve: Reservation | None = None,
    ) -> Use:
        value = self._live(key)
        if value is None:
            return Use(None, 0, reserved=False)
        if not await self.set_if_absent(lease, "1", lease_s):
            return Use(value, 0, reserved=False)
        uses = await self.incr(counter, ttl_s)
        if reserve is None or (max_uses is not None and uses > max_uses):
            return Use(value, uses, reserved=False)
        if await self.incr(reserve.key, reserve.ttl_s) > reserve.limit:
            await self.decr_if_exists(reserve.key)
            return Use(value, uses, reserved=False, retry_after=await self.ttl(reserve.key))
        return Use(value, uses, reserved=True)

    async def pop_and_delete(self, key: str, *others: str) -> str | None:
        value = await self.pop(key)
        await self.delete(*others)
        return value

    async def set_and_release(self, key: str, value: str, ttl_s: int, *, counter: str) -> None:
        await self.set(key, value, ttl_s)
        await self.decr_if_exists(counter)

    async def decr_if_exists(self, *keys: str) -> None:
        async with self._lock:
            for key in keys:
                self._decr_now(key)

    def _ttl_now(self, key: str) -> int:
        if self._live(key) is None:
            return 0
        return max(1, int(self._data[key][1] - self._now() + 0.999))

    async def ttl(self, key: str) -> int:
        return self._ttl_now(key)

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

# Its keys share a hash tag (the caller's job), so this runs on a Redis Cluster too. KEYS: the
# key, its use counter, its lease[, the reservation's count]; ARGV: ttl, lease, max uses (0: no
# maximum)[, the reservation's window and limit].
_BEGIN_USE = """
local value = redis.call('GET', KEYS[1])
if not value then return {false, 0, 0, 0} end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then return {value, 0, 0, 0} end
local uses = redis.call('INCR', KEYS[2])
if uses == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
local max_uses = tonumber(ARGV[3])
if #KEYS < 4 or (max_uses > 0 and uses > max_uses) then return {value, uses, 0, 0} end
local count = redis.call('INCR', KEYS[4])
if count == 1 then redis.call('EXPIRE', KEYS[4], ARGV[4]) end
if count > tonumber(ARGV[5]) then
  redis.call('DECR', KEYS[4])
  return {value, uses, 0, redis.call('TTL', KEYS[4])}
end
return {value, uses, 1, 0}
"""

_SET_AND_RELEASE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DECR', KEYS[2]) end
return true
"""

_DECR_IF_EXISTS = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('DECR', key) end
end
return true
"""

# KEYS: [the cooldown,] the counts; ARGV: the cooldown's seconds (0: no cooldown, and KEYS
# holds none), then each count's window and limit. Returns {0, 0} when everything was taken,
# else the refusing key's place in KEYS and its TTL.
_TAKE_ALL = """
local first = 1
if tonumber(ARGV[1]) > 0 then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    return {1, redis.call('TTL', KEYS[1])}
  end
  first = 2
end
for i = first, #KEYS do
  local at = 2 * (i - first) + 2
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[at]) end
  if count > tonumber(ARGV[at + 1]) then
    local retry_after = redis.call('TTL', KEYS[i])
    for j = first, i do redis.call('DECR', KEYS[j]) end
    return {i, retry_after}
  end
end
return {0, 0}
"""

# KEYS: the count, the key to set; ARGV: the seconds both live, the count's limit, the value.
_COUNT_THEN_SET = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if count <= tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[1]) end
return count
"""


class RedisUnavailable(ConnectionError):
    """Redis could not be reached or did not answer in time; the API answers 503."""


class _ReportUnavailable:
    """Turns redis-py's connection failures, which are not the builtin ConnectionError, into
    RedisUnavailable; other Redis errors (a script error, a wrong type) stay what they are."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is not None and isinstance(exc, UNAVAILABLE_ERRORS):
            raise RedisUnavailable(f"Redis does not answer: {exc}") from exc
        if exc is not None and closed_under_the_command(exc):
            raise RedisUnavailable(f"Redis connection closed by a cluster reset: {exc}") from exc


# What a Redis that is down, or a Cluster or Sentinel set in the middle of a failover, raises:
# worth a retry shortly (503), never a bug (500).
UNAVAILABLE_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.RedisClusterException,  # the slot's node is unreachable, or none covers it
)
reporting_unavailable = _ReportUnavailable()

_REDIS_PY = Path(redis.__file__).resolve().parent


def closed_under_the_command(exc: BaseException) -> bool:
    """redis-py's Cluster client (8.x) resets itself on some failover errors: on CLUSTERDOWN or
    an uncovered slot from any command, and on a connection error or timeout from any of its
    pipelines, it calls its own ``aclose()``, which closes every connection of every node,
    those that other commands are using at that moment too. A command that was about to write
    on one of them then fails inside redis-py with ``AttributeError: 'NoneType' object has no
    attribute 'writelines'`` (the connection's writer is gone), before anything was sent.
    That is the failover again, not a bug of ours: the request answers 503 like the others.
    Only an AttributeError raised in redis-py's own code counts; one of ours stays a 500."""
    if not isinstance(exc, AttributeError):
        return False
    frame = exc.__traceback__
    innermost: TracebackType | None = None
    while frame is not None:
        innermost, frame = frame, frame.tb_next
    if innermost is None:
        return False
    return Path(innermost.tb_frame.f_code.co_filename).resolve().is_relative_to(_REDIS_PY)


class RedisStore:
    """Shared by every worker and replica that points at the same Redis (or Sentinel-managed
    master, or Cluster), through redis-py."""

    def __init__(self, url: str, *, prefix: str = "cloudmfa:") -> None:
        self._redis = connect_redis(parse_redis_url(url))
        # On a Cluster every multi-key call goes out as single commands, never through the
        # client's pipelines: a connection error in a pipeline resets the whole client, which
        # breaks the commands of every other request in flight (see closed_under_the_command).
        self._cluster = isinstance(self._redis, RedisCluster)
        self._prefix = prefix
        self._incr = self._redis.register_script(_INCR_WITH_TTL)
        self._begin_use = self._redis.register_script(_BEGIN_USE)
        self._decr_if_exists = self._redis.register_script(_DECR_IF_EXISTS)
        self._set_and_release = self._redis.register_script(_SET_AND_RELEASE)
        self._take_all = self._redis.register_script(_TAKE_ALL)
        self._count_then_set = self._redis.register_script(_COUNT_THEN_SET)

    @property
    def redis(self) -> RedisClient:
        """The client, for other users of the same Redis (the per-IP limiter)."""
        return self._redis

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def incr(self, key: str, ttl_s: int) -> int:
        with reporting_unavailable:
            return int(await self._incr([self._k(key)], [ttl_s]))

    async def decr_if_exists(self, *keys: str) -> None:
        if keys:
            with reporting_unavailable:
                await self._decr_if_exists([self._k(key) for key in keys])

    async def take_all(
        self, reservations: Sequence[Reservation], *, cooldown: Cooldown | None = None
    ) -> Refusal | None:
        keys = [self._k(r.key) for r in reservations]
        args: list[int] = [cooldown.ttl_s if cooldown is not None else 0]
        for reservation in reservations:
            args += [reservation.ttl_s, reservation.limit]
        steps: list[Cooldown | Reservation] = list(reservations)
        if cooldown is not None:
            keys.insert(0, self._k(cooldown.key))
            steps.insert(0, cooldown)
        with reporting_unavailable:
            refused_at, retry_after = await self._take_all(keys, args)
        if not refused_at:
            return None
        return Refusal(steps[int(refused_at) - 1], max(0, int(retry_after)))

    async def count_then_set(
        self, counter: str, *, limit: int, key: str, value: str, ttl_s: int
    ) -> int:
        with reporting_unavailable:
            count = await self._count_then_set(
                [self._k(counter), self._k(key)], [ttl_s, limit, value]
            )
        return int(count)

    async def begin_use(
        self,
        key: str,
        *,
        counter: str,
        lease: str,
        ttl_s: int,
        lease_s: int,
        max_uses: int | None = None,
        reserve: Reservation | None = None,
    ) -> Use:
        keys = [self._k(key), self._k(counter), self._k(lease)]
        args: list[int] = [ttl_s, lease_s, max_uses or 0]
        if reserve is not None:
            keys.append(self._k(reserve.key))
            args += [reserve.ttl_s, reserve.limit]
        with reporting_unavailable:
            value, uses, reserved, retry_after = await self._begin_use(keys, args)
        return Use(value, int(uses), reserved=bool(reserved), retry_after=max(0, int(retry_after)))

    async def set_and_release(self, key: str, value: str, ttl_s: int, *, counter: str) -> None:
        with reporting_unavailable:
            await self._set_and_release([self._k(key), self._k(counter)], [value, ttl_s])

    async def pop_and_delete(self, key: str, *others: str) -> str | None:
        """GETDEL and the DELs leave in one pipeline, one round trip (per node on a Cluster,
        where the keys of different owners live in different slots). Each command is atomic;
        the set of them is not: a command of another client can run between the GETDEL and the
        DELs. Whoever's GETDEL returns the value is the one that spent it, which is what must
        be decided once; the DELs clear state that is unconditionally cleared either way.
        On a Cluster they are separate commands sent at once instead (one round trip too)."""
        if self._cluster:
            replies = await self._one_command_per_key(
                ("GETDEL", key), *(("DEL", other) for other in others)
            )
            return cast(str | None, replies[0])
        with reporting_unavailable:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.getdel(self._k(key))
                for other in others:
                    pipe.delete(self._k(other))
                replies = await pipe.execute()
        value: str | None = replies[0]
        return value

    async def ttl(self, key: str) -> int:
        with reporting_unavailable:
            remaining = int(await self._redis.ttl(self._k(key)))
        return max(remaining, 0)

    async def set(self, key: str, value: str, ttl_s: int) -> None:
        with reporting_unavailable:
            await self._redis.set(self._k(key), value, ex=ttl_s)

    async def set_if_absent(self, key: str, value: str, ttl_s: int) -> bool:
        with reporting_unavailable:
            return bool(await self._redis.set(self._k(key), value, ex=ttl_s, nx=True))

    async def get(self, key: str) -> str | None:
        with reporting_unavailable:
            value = await self._redis.get(self._k(key))
        return cast(str | None, value)  # str: the client decodes replies

    async def exists_any(self, *keys: str) -> bool:
        if self._cluster:
            return any(await self._one_command_per_key(*(("EXISTS", key) for key in keys)))
        with reporting_unavailable:
            return bool(await self._redis.exists(*(self._k(k) for k in keys)))

    async def pop(self, key: str) -> str | None:
        with reporting_unavailable:
            value = await self._redis.getdel(self._k(key))
        return cast(str | None, value)

    async def delete(self, *keys: str) -> None:
        if keys and self._cluster:
            await self._one_command_per_key(*(("DEL", key) for key in keys))
        elif keys:
            with reporting_unavailable:
                await self._redis.delete(*(self._k(k) for k in keys))

    async def _one_command_per_key(self, *calls: tuple[str, str]) -> list[Any]:
        """Each (command, key) as a single-key command, all sent at once, through a Cluster
        client's command path (see ``__init__``). The replies in order; the first failure is
        raised once every command has answered, so none is left running unobserved."""
        with reporting_unavailable:
            replies = await asyncio.gather(
                *(self._redis.execute_command(command, self._k(key)) for command, key in calls),
                return_exceptions=True,
            )
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
        return replies

    async def ping(self) -> None:
        with reporting_unavailable:
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def create_store(redis_url: str | None, *, prefix: str, clock: Clock) -> EphemeralStore:
    if redis_url:
        return RedisStore(redis_url, prefix=prefix)
    return MemoryStore(clock)

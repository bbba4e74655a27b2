"""CPU per ephemeral-store call and per per-IP limiter hit, against the local Redis.

    .venv/bin/python bench/store_calls.py [--calls N]

The store and the limiter come from `Services.build`, as the service builds them, so the same
script measures whichever Redis client the checkout has. Two shapes of load: one call at a time
(the CPU of one round trip), and 32 concurrent callers (the bench's clients), where a client can
share writes and connections between requests. CPU is this process's (`time.process_time`), on
uvloop like the server; the best of ROUNDS runs counts, as in bench/micro.py. Needs Redis on
127.0.0.1:6379 (BENCH_REDIS to change).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloudmfa.config import Settings  # noqa: E402
from cloudmfa.services import Services  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
ROUNDS = 5
CONCURRENCY = 32

Call = Callable[[int], Awaitable[Any]]


async def cpu_per_call(fn: Call, calls: int, concurrency: int) -> float:
    """CPU µs per call: the best of ROUNDS runs of `calls` calls by `concurrency` tasks."""
    per_task = calls // concurrency

    async def worker(offset: int) -> None:
        for i in range(per_task):
            await fn(offset + i)

    await asyncio.gather(*(worker(t * per_task) for t in range(concurrency)))  # warm
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        await asyncio.gather(*(worker(t * per_task) for t in range(concurrency)))
        best = min(best, 1e6 * (time.process_time() - started) / (per_task * concurrency))
    return best


async def main(calls: int) -> None:
    prefix = f"bench-store-{secrets.token_hex(4)}:"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="sqlite+aiosqlite:///:memory:",
        secret_keys="b1:" + "A" * 43 + "=",
        redis_url=REDIS_URL,
        redis_key_prefix=prefix,
        ip_rate_limit="1000000000/minute",
    )
    svc = Services.build(settings)
    store = svc.ephemeral
    await store.set("token", "x" * 400, 600)  # about an mfa_token's stored state

    async def get(_i: int) -> None:
        await store.get("token")

    async def set_(i: int) -> None:
        await store.set(f"set:{i % 1000}", "1", 60)

    async def incr(i: int) -> None:
        await store.incr(f"incr:{i % 1000}", 60)

    async def begin_use(i: int) -> None:
        await store.begin_use("token", counter="tries", lease=f"lease:{i}", ttl_s=60, lease_s=1)

    async def pop_and_delete(i: int) -> None:
        await store.pop_and_delete(f"absent:{i}", "account", f"lease:{i}")

    async def limiter_hit(i: int) -> None:
        await svc.ip_limiter.hit(f"10.0.{i % 250}.{i % 7}")

    async def verify_step(i: int) -> None:
        """What the TOTP verify step asks of Redis: limiter hit, begin_use, reserve, spend."""
        await svc.ip_limiter.hit("10.1.0.1")
        await store.begin_use("token", counter="tries", lease=f"vlease:{i}", ttl_s=60, lease_s=1)
        email = f"bench-{i}@example.com"
        await svc.throttle.reserve(email)
        await store.pop_and_delete(f"absent:{i}", svc.throttle.key_for(email), f"vlease:{i}")

    variants: dict[str, Call] = {
        "get": get,
        "set": set_,
        "incr (script)": incr,
        "begin_use (script)": begin_use,
        "pop_and_delete": pop_and_delete,
        "per-IP limiter hit": limiter_hit,
        "the verify step's 4 calls": verify_step,
    }
    try:
        for concurrency in (1, CONCURRENCY):
            print(f"CPU µs per call, {concurrency} concurrent caller(s), best of {ROUNDS}")
            for name, fn in variants.items():
                n = calls // 4 if name.startswith("the verify") else calls
                print(f"  {await cpu_per_call(fn, n, concurrency):7.1f}  {name}")
    finally:
        await svc.close()
        await _drop_keys(prefix)


async def _drop_keys(prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=6400)
    uvloop.run(main(parser.parse_args().calls))

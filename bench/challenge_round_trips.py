"""The round trips of one `POST /auth/challenge` for an SMS factor, counted rather than timed:
every Redis command the request sends (Redis's MONITOR: the commands that name this run's key
prefix, not those a script runs) and every statement it sends PostgreSQL (SQLAlchemy's, and
through asyncpg's query logger on each pooled connection what runs on asyncpg directly: BEGIN,
COMMIT and the one-statement writes).

    .venv/bin/python bench/challenge_round_trips.py [--requests 50] [--resend-cooldown 30]

The app runs in this process (over ASGI, no server), on a fresh PostgreSQL database and the
local Redis, configured as bench (g) configures serve in worker mode: the limits moved out of
the way but each still evaluated, each message queued for a `cloudmfa worker` that is not
running (in-process delivery would add its own statements to the count).
The audit sealer and the prune are off, so nothing else talks to either store meanwhile. After
a warm-up (statements prepared, scripts loaded), `--cpu-requests` challenges of distinct users
run one after the other with nothing watching, timed in CPU seconds of this process (the app
and the test client together: the client's share is the same before and after a change); then
`--requests` more with the watchers on, counted. The figures are per request. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import code_delivery  # noqa: E402
from cloudmfa.app import create_app  # noqa: E402
from cloudmfa.config import Settings  # noqa: E402
from cloudmfa.flows import second_factor  # noqa: E402
from cloudmfa.security.passwords import PasswordHashing  # noqa: E402

PG_ADMIN_DSN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
SECRET_KEYS = "bench:" + "QkVOQ0hCRU5DSEJFTkNIQkVOQ0hCRU5DSEJFTkNIQkU="
WARM_UP = 20


def settings_for(database_url: str, prefix: str, cooldown_s: int) -> Settings:
    delivery = code_delivery.delivery_env("http://127.0.0.1:9", "unused-secret", "worker")
    values: dict[str, Any] = {
        key[len("CLOUDMFA_") :].lower(): value for key, value in delivery.items()
    }
    values.update(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_key_prefix=prefix,
        secret_keys=SECRET_KEYS,
        mfa_policy="optional",
        ip_rate_limit="100000000/minute",
        audit_seal_interval_s=0,
        prune_interval_s=0,
        argon2_memory_kib=8192,
        argon2_time_cost=1,
        otp_resend_cooldown_s=cooldown_s,  # each user asks once: it never refuses
    )
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Statements:
    """What PostgreSQL receives from the service's pool, while ``counting``."""

    def __init__(self) -> None:
        self.counting = False
        self.seen: Counter[str] = Counter()
        self._watched: set[int] = set()

    def watch(self, engine: Any) -> None:
        # Statements through SQLAlchemy (prepared by its asyncpg adapter, which asyncpg's query
        # logger does not see) ...
        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _on_execute(*args: Any) -> None:
            self._count(args[2])

        # ... and what runs on asyncpg directly: BEGIN and COMMIT, and the statements that
        # the stores send straight to asyncpg (store/sign_in.py).
        @event.listens_for(engine.sync_engine, "checkout")
        def _on_checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
            connection = record.driver_connection
            if id(connection) not in self._watched:
                self._watched.add(id(connection))
                connection.add_query_logger(lambda logged: self._count(logged.query))

    def _count(self, query: str) -> None:
        if self.counting:
            self.seen[" ".join(query.split())[:60]] += 1


async def watch_redis(prefix: str, commands: Counter[str], ready: asyncio.Event) -> None:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with redis.monitor() as monitor:
            ready.set()
            async for sent in monitor.listen():
                # Commands a script runs are listed too (client type "lua"): not round trips.
                if prefix in sent["command"] and sent.get("client_type") != "lua":
                    commands[sent["command"].split()[0].upper()] += 1
    finally:
        await redis.aclose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    name = "cloudmfa_round_trips_" + secrets.token_hex(4)
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    prefix = f"cloudmfa-round-trips-{secrets.token_hex(4)}:"
    database_url = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    settings = settings_for(database_url, prefix, args.resend_cooldown)
    try:
        hashing = PasswordHashing(time_cost=1, memory_kib=8192, parallelism=1)
        password_hash = await hashing.hash("bench-plum-orbit-velvet-canyon-42")
        total = WARM_UP + args.cpu_requests + args.requests
        users = await code_delivery.provision(settings, total, 0, password_hash)
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://bench")
        statements = Statements()
        redis_commands: Counter[str] = Counter()
        async with app.router.lifespan_context(app), client:
            svc = app.state.services
            tokens = []
            for user_id, email, _, _ in users:
                async with svc.reader.connect() as conn:
                    account = await svc.factor_types.account_for_sign_in(conn, email)
                assert account is not None and account.user.id == user_id
                offer = svc.factor_types.second_step_of(account)
                begun = await second_factor.begin(svc, user_id=user_id, email=email, offer=offer)
                tokens.append(begun.mfa_token)

            async def challenge(i: int) -> None:
                body = {"mfa_token": tokens[i], "factor_id": users[i][2]}
                r = await client.post("/api/v1/auth/challenge", json=body)
                assert r.status_code == 202, r.text

            for i in range(WARM_UP):
                await challenge(i)
            cpu_started = time.process_time()
            for i in range(WARM_UP, WARM_UP + args.cpu_requests):
                await challenge(i)
            cpu_s = time.process_time() - cpu_started

            statements.watch(svc.engine)
            ready = asyncio.Event()
            monitor = asyncio.create_task(watch_redis(prefix, redis_commands, ready))
            await ready.wait()
            await asyncio.sleep(0.2)
            statements.counting = True
            for i in range(WARM_UP + args.cpu_requests, total):
                await challenge(i)
            statements.counting = False
            await asyncio.sleep(0.5)  # MONITOR's last lines
            monitor.cancel()
        per_request = args.requests
        return {
            "resend_cooldown_s": args.resend_cooldown,
            "cpu_ms_per_request": round(1000 * cpu_s / args.cpu_requests, 3),
            "requests": per_request,
            "redis_per_request": round(sum(redis_commands.values()) / per_request, 2),
            "redis_commands": {k: round(v / per_request, 2) for k, v in redis_commands.items()},
            "postgres_per_request": round(sum(statements.seen.values()) / per_request, 2),
            "postgres_statements": {
                k: round(v / per_request, 2) for k, v in statements.seen.most_common()
            },
        }
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        redis = Redis.from_url(REDIS_URL)
        keys = [k async for k in redis.scan_iter(match=f"*{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="counted")
    parser.add_argument("--cpu-requests", type=int, default=400, help="timed in CPU seconds")
    parser.add_argument(
        "--resend-cooldown", type=int, default=0, help="seconds (bench (g): 0; the default: 30)"
    )
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))

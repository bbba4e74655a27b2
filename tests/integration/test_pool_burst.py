"""The database pool with and without a burst (store/db.py, create_engine): with one, callers
beyond the pool's size get connections of their own; without one (`cloudmfa worker`), they wait
for a connection of the pool, and the pool never holds more than its size, counted so in the
capacity gauge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

import conftest
from cloudmfa.services import Services
from cloudmfa.store.db import create_engine, pool_capacity
from conftest import PG_DSN, PgDatabase

PG_URL = PG_DSN.replace("postgresql://", "postgresql+asyncpg://")


async def sessions_in(database: PgDatabase) -> int:
    admin = await asyncpg.connect(PG_DSN)
    try:
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database.name
        )
        return int(count)
    finally:
        await admin.close()


async def test_a_pool_without_a_burst_makes_the_next_caller_wait_for_a_connection() -> None:
    database = PgDatabase()
    await database.create()
    url = database.url.replace("postgresql://", "postgresql+asyncpg://")
    try:
        for burst, most in ((True, 3), (False, 2)):
            engine = create_engine(url, pool_size=2, burst=burst)
            try:
                first, second = await engine.connect(), await engine.connect()
                third = asyncio.create_task(engine.connect().start())
                await asyncio.sleep(0.2)  # time enough to connect, were it allowed to
                assert third.done() is burst
                assert await sessions_in(database) == most
                await first.close()
                await (await third).close()  # given first's connection, without a burst
                await second.close()
                assert await sessions_in(database) == 2  # what came beyond the pool is closed
            finally:
                await engine.dispose()
    finally:
        await database.drop()


async def test_the_capacity_gauge_counts_no_burst_for_a_pool_without_one(tmp_path: Path) -> None:
    backend = {"database_url": PG_URL, "redis_url": None, "data_dir": str(tmp_path)}
    settings = conftest.test_settings(backend, db_pool_size=8)
    assert pool_capacity(settings.database_url, 8) == 12
    assert pool_capacity(settings.database_url, 8, burst=False) == 8
    services = Services.build(settings, db_burst=False)
    try:
        assert services._capacity()["db"] == 8
    finally:
        await services.close()

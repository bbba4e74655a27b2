"""Shared fixtures: real databases and a real Redis, created per module and dropped after.

Every API test runs on SQLite with the in-process store (the zero-configuration deployment) and
on PostgreSQL with Redis (the scaled-out one). A module that sets ``BACKENDS = ALL_BACKENDS``
runs on MariaDB with Redis too: the modules that exercise every flow and every single-use
guarantee do; the rest would only run the same statements again, at a cost in test time.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from cloudmfa.app import create_app
from cloudmfa.clock import FrozenClock
from cloudmfa.config import Settings
from cloudmfa.services import Services

PG_DSN = os.environ.get("CLOUDMFA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MARIADB_DSN = os.environ.get("CLOUDMFA_TEST_MARIADB", "mysql://root@127.0.0.1:3306/mysql")
REDIS_URL = os.environ.get("CLOUDMFA_TEST_REDIS", "redis://127.0.0.1:6379/0")

# Fast hashing in tests; the real parameters have their own test and benchmark.
FAST_ARGON2 = {"argon2_memory_kib": 8192, "argon2_time_cost": 1}
PASSWORD = "plum-orbit-velvet-canyon-42"
# A fixed AES-256 key ring, so no test writes a key file into the working directory.
TEST_SECRET_KEYS = "t1:" + "A" * 43 + "="


class PgDatabase:
    """A throwaway PostgreSQL database with a random name."""

    def __init__(self) -> None:
        self.name = "cloudmfa_test_" + secrets.token_hex(6)
        host_part = PG_DSN.rsplit("/", 1)[0]
        self.url = f"{host_part}/{self.name}"

    async def create(self) -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


class MariaDbDatabase:
    """A throwaway MariaDB (or MySQL) database with a random name."""

    def __init__(self) -> None:
        self.name = "cloudmfa_test_" + secrets.token_hex(6)
        self.url = f"{MARIADB_DSN.rsplit('/', 1)[0]}/{self.name}"

    async def _run(self, sql: str) -> None:
        url = make_url(MARIADB_DSN)
        conn = await asyncmy.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql)
        finally:
            conn.close()

    async def create(self) -> None:
        await self._run(
            f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        )

    async def drop(self) -> None:
        await self._run(f"DROP DATABASE IF EXISTS `{self.name}`")


async def drop_redis_prefix(prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
        # The delivery queue's keys (saq names them saq:<queue name>:…, the prefix inside).
        keys += [k async for k in redis.scan_iter(match=f"saq:*{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@asynccontextmanager
async def fresh_backend(kind: str, directory: Path) -> AsyncIterator[dict[str, Any]]:
    """Settings overrides naming a fresh database (and Redis key space), dropped after:
    `sqlite-memory` (a file in ``directory``, the in-process store), `postgres-redis` or
    `mariadb-redis`."""
    if kind == "sqlite-memory":
        yield {
            "database_url": f"sqlite+aiosqlite:///{directory / 'cloudmfa.db'}",
            "redis_url": None,
        }
        return
    db = MariaDbDatabase() if kind == "mariadb-redis" else PgDatabase()
    await db.create()
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"
    try:
        yield {"database_url": db.url, "redis_url": REDIS_URL, "redis_key_prefix": prefix}
    finally:
        await drop_redis_prefix(prefix)
        await db.drop()


DEFAULT_BACKENDS = ("sqlite-memory", "postgres-redis")
ALL_BACKENDS = (*DEFAULT_BACKENDS, "mariadb-redis")


# CLOUDMFA_TEST_BACKENDS=mariadb-redis (comma-separated) runs every module on the backends named
# instead, for a change that touches the database layer.
FORCED_BACKENDS = tuple(filter(None, os.environ.get("CLOUDMFA_TEST_BACKENDS", "").split(",")))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each module that uses a backend runs on its ``BACKENDS`` (DEFAULT_BACKENDS unless it
    says so)."""
    if "backend" in metafunc.fixturenames:
        kinds = FORCED_BACKENDS or getattr(metafunc.module, "BACKENDS", DEFAULT_BACKENDS)
        metafunc.parametrize("backend", kinds, indirect=True, scope="module")


@pytest_asyncio.fixture(scope="module")
async def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Any]]:
    """A fresh backend for one module."""
    async with fresh_backend(request.param, Path(tmp_path_factory.mktemp("db"))) as values:
        yield values


@dataclass
class Api:
    """An app under test, reached over ASGI, with helpers for the common journeys."""

    client: httpx.AsyncClient
    svc: Services
    clock: FrozenClock
    created: list[str] = field(default_factory=list)

    @staticmethod
    def new_email(tag: str = "user") -> str:
        return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"

    async def sign_up(
        self, email: str | None = None, password: str = PASSWORD, **extra: Any
    ) -> dict[str, Any]:
        email = email or self.new_email()
        r = await self.client.post(
            "/api/v1/accounts", json={"email": email, "password": password, **extra}
        )
        assert r.status_code == 201, r.text
        return {**r.json(), "password": password}

    async def login(self, email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
        r = await self.client.post(
            "/api/v1/auth/login", json={"email": email, "password": password, **extra}
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def signed_in(self, tag: str = "user") -> tuple[dict[str, Any], dict[str, str]]:
        """A fresh account and the Authorization header of a new session."""
        account = await self.sign_up(self.new_email(tag))
        tokens = await self.login(account["email"])
        return {**account, **tokens}, bearer(tokens["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_settings(backend: dict[str, Any], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mfa_policy": "optional",
        "public_url": "http://localhost:8000",
        "secret_keys": TEST_SECRET_KEYS,
        # Every test client comes from 127.0.0.1; the per-IP limit has tests of its own.
        "ip_rate_limit": "100000/minute",
        # A prune in the background would race the tests' moving clock; it has tests of its own.
        "prune_interval_s": 0,
        **FAST_ARGON2,
        **backend,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def start_api(settings: Settings, clock: FrozenClock | None = None) -> tuple[Any, Api]:
    clock = clock or FrozenClock(datetime.now(UTC).replace(microsecond=0))
    app = create_app(settings, clock=clock)
    return app, Api(
        client=httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
            base_url="http://testserver",
        ),
        svc=app.state.services,
        clock=clock,
    )


@pytest_asyncio.fixture(scope="module")
async def api(backend: dict[str, Any]) -> AsyncIterator[Api]:
    """One app per module and backend, under the `optional` MFA policy."""
    app, api = await start_api(test_settings(backend))
    async with app.router.lifespan_context(app):
        async with api.client:
            yield api


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"

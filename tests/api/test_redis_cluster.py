"""A real Redis Cluster (three masters of Debian's redis-server on 127.0.0.1, started here and
torn down after): the service reached through `redis+cluster://` signs in with a second factor,
spends an mfa_token once, keeps the per-IP limit, and clears keys that live in other slots."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
from redis.crc import key_slot

import support
from cloudmfa.store.ephemeral import RedisStore
from conftest import Api, start_api
from conftest import test_settings as settings_for
from support import free_port, mfa_user

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
    ports = [free_port() for _ in range(3)]
    servers = []
    try:
        for port in ports:
            data = tmp_path_factory.mktemp(f"redis-{port}")
            servers.append(_start_node(port, data))
        for port in ports:
            _wait_for_ping(port)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"],
            input="yes\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        _wait_for_cluster(ports)
        yield "redis+cluster://" + ",".join(nodes[:2])  # seeds: not every node
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)


def _start_node(port: int, data: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "redis-server",
            *("--bind", "127.0.0.1", "--port", str(port)),
            *("--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf")),
            # The bus port defaults to port + 10000, past 65535 for a port above 55535.
            *("--cluster-port", str(free_port())),
            *("--dir", str(data), "--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_ping(port: int) -> None:
    deadline = time.monotonic() + 30  # the machine may be busy with the rest of the suite
    while True:
        try:
            if redis.Redis(host="127.0.0.1", port=port).ping():
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_for_cluster(ports: list[int]) -> None:
    deadline = time.monotonic() + 60

    def state(port: int) -> str:
        return str(redis.Redis(host="127.0.0.1", port=port).cluster("info")["cluster_state"])

    while any(state(port) != "ok" for port in ports):
        assert time.monotonic() < deadline, "the cluster did not come up"
        time.sleep(0.1)


@pytest_asyncio.fixture(scope="module")
async def api(cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    db = tmp_path_factory.mktemp("db") / "cloudmfa.db"
    backend: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{db}",
        "redis_url": cluster_url,
        "redis_key_prefix": f"cloudmfa-test-{secrets.token_hex(4)}:",
    }
    app, api = await start_api(settings_for(backend))
    async with app.router.lifespan_context(app), api.client:
        yield api


async def test_a_second_factor_sign_in_spends_its_mfa_token_once(api: Api) -> None:
    user = await mfa_user(api, "cluster")
    token = (await api.login(user.email))["mfa_token"]
    body = {"mfa_token": token, "factor_id": user.factor_id}

    wrong = await api.client.post("/api/v1/auth/verify", json={**body, "code": "000000"})
    support.assert_problem(wrong, 401, "invalid_code")
    code = user.next_code(api)  # the activation spent the current step
    right = await api.client.post("/api/v1/auth/verify", json={**body, "code": code})
    support.assert_authenticated(right)
    again = await api.client.post("/api/v1/auth/verify", json={**body, "code": user.next_code(api)})
    support.assert_problem(again, 401, "mfa_token_expired")


async def test_the_per_ip_limit_holds_on_the_cluster(api: Api, cluster_url: str) -> None:
    settings = settings_for(
        {"database_url": api.svc.settings.database_url, "redis_url": cluster_url},
        redis_key_prefix=f"cloudmfa-test-{secrets.token_hex(4)}:",
        ip_rate_limit="3/minute",
    )
    app, limited = await start_api(settings)
    async with app.router.lifespan_context(app), limited.client:
        login = {"email": "nobody@example.com", "password": "wrong-password-123"}
        answers = [
            (await limited.client.post("/api/v1/auth/login", json=login)).status_code
            for _ in range(4)
        ]
    assert answers == [401, 401, 401, 429]


async def test_keys_in_other_slots_are_cleared_with_the_spent_one(cluster_url: str) -> None:
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"
    store = RedisStore(cluster_url, prefix=prefix)
    try:
        keys = ["token", "account", "lease", "another"]
        assert len({key_slot((prefix + key).encode()) for key in keys}) == len(keys)
        for key in keys:
            await store.set(key, key, 60)
        assert await store.pop_and_delete("token", "account", "lease") == "token"
        assert await store.exists_any("token", "account", "lease") is False
        assert await store.exists_any("token", "another") is True
        await store.delete(*keys)
        assert await store.exists_any(*keys) is False
    finally:
        await store.close()

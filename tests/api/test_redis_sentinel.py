"""A real Sentinel setup (a master, a replica, three Sentinels from Debian's redis-server, on
127.0.0.1, started here and torn down after), the service reached through
`redis+sentinel://…/service-name` on PostgreSQL: sign-ins with a second factor, the per-IP
limit, a logout seen by another replica; then the master is killed in the middle of sign-ins
and nothing single use is spent twice (tests/sign_ins_under_failover.py says what may be lost
and what must hold)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

import support
from conftest import PASSWORD, TEST_SECRET_KEYS, Api, PgDatabase, start_api
from conftest import test_settings as settings_for
from redis_servers import SentinelSetup, sentinel_setup
from sign_ins_under_failover import run_rounds, sessions_per_user
from support import cloudmfa_command, free_port, mfa_user

pytestmark = pytest.mark.slow

__all__ = ["sentinel_setup"]  # the fixture, imported so that pytest finds it here

USERS = 4


@pytest_asyncio.fixture(scope="module")
async def backend(sentinel_setup: SentinelSetup) -> AsyncIterator[dict[str, Any]]:
    db = PgDatabase()
    await db.create()
    try:
        yield {
            "database_url": db.url,
            "redis_url": sentinel_setup.url,
            "redis_key_prefix": f"cloudmfa-test-{secrets.token_hex(4)}:",
            # The failover rounds spend every proof twice: each loser counts as a failure.
            "login_max_failures": 100,
        }
    finally:
        await db.drop()


@pytest_asyncio.fixture(scope="module")
async def api(backend: dict[str, Any]) -> AsyncIterator[Api]:
    app, api = await start_api(settings_for(backend))
    async with app.router.lifespan_context(app), api.client:
        yield api


@pytest_asyncio.fixture(scope="module")
async def other_replica(api: Api, backend: dict[str, Any]) -> AsyncIterator[Api]:
    """A second app on the same database and Sentinels: another replica of the service."""
    app, other = await start_api(settings_for(backend), clock=api.clock)
    async with app.router.lifespan_context(app), other.client:
        yield other


async def test_a_second_factor_sign_in_spends_its_mfa_token_once(api: Api) -> None:
    user = await mfa_user(api, "sentinel")
    token = (await api.login(user.email))["mfa_token"]
    body = {"mfa_token": token, "factor_id": user.factor_id}

    wrong = await api.client.post("/api/v1/auth/verify", json={**body, "code": "000000"})
    support.assert_problem(wrong, 401, "invalid_code")
    right = await api.client.post("/api/v1/auth/verify", json={**body, "code": user.next_code(api)})
    support.assert_authenticated(right)
    again = await api.client.post("/api/v1/auth/verify", json={**body, "code": user.next_code(api)})
    support.assert_problem(again, 401, "mfa_token_expired")


async def test_a_logout_is_refused_by_the_other_replica(api: Api, other_replica: Api) -> None:
    _, headers = await api.signed_in("sentinel-logout")
    assert (await other_replica.client.get("/api/v1/me", headers=headers)).status_code == 200
    assert (await api.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
    refused = await other_replica.client.get("/api/v1/me", headers=headers)
    support.assert_problem(refused, 401, "invalid_token")


async def test_the_per_ip_limit_holds_through_sentinel(backend: dict[str, Any]) -> None:
    settings = settings_for(
        backend, redis_key_prefix=f"cloudmfa-test-{secrets.token_hex(4)}:", ip_rate_limit="3/minute"
    )
    app, limited = await start_api(settings)
    async with app.router.lifespan_context(app), limited.client:
        login = {"email": "nobody@example.com", "password": "wrong-password-123"}
        answers = [
            (await limited.client.post("/api/v1/auth/login", json=login)).status_code
            for _ in range(4)
        ]
    assert answers == [401, 401, 401, 429]


async def test_killing_the_master_mid_sign_in_spends_no_proof_twice(
    api: Api, other_replica: Api, backend: dict[str, Any], sentinel_setup: SentinelSetup
) -> None:
    users = [await mfa_user(api, f"failover-{i}") for i in range(USERS)]
    before = await sessions_per_user(backend["database_url"], [u.id for u in users])
    old_master = sentinel_setup.master_port()

    def fail_over() -> None:
        killed = sentinel_setup.kill_master()
        sentinel_setup.wait_for_failover_from(killed)

    tally = await run_rounds(api, users, fail_over=fail_over)

    assert sentinel_setup.master_port() != old_master
    assert tally.rounds_during_failover >= 1, tally  # the failover did fall amid sign-ins
    assert tally.answers["503 unavailable"] >= 1, tally.answers  # ...and was felt
    # What the database holds: at most one session per proof offered (each was sent twice).
    after = await sessions_per_user(backend["database_url"], [u.id for u in users])
    for user in users:
        signed_in = after[user.id] - before[user.id]
        assert signed_in <= tally.proofs_offered[user.id], (signed_in, tally)
        assert signed_in >= tally.wins[user.id]
    assert tally.refresh_wins >= 1

    # After it: a logout on one replica is refused by the other at once, through the new master.
    _, headers = await api.signed_in("after-failover")
    assert (await api.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
    refused = await other_replica.client.get("/api/v1/me", headers=headers)
    support.assert_problem(refused, 401, "invalid_token")

    # The old master comes back empty and the Sentinels make it the new one's replica.
    sentinel_setup.restart_killed()
    _, headers = await api.signed_in("after-restart")
    assert (await other_replica.client.get("/api/v1/me", headers=headers)).status_code == 200


def test_serve_runs_on_the_sentinels_master(
    sentinel_setup: SentinelSetup, backend: dict[str, Any], tmp_path: Path
) -> None:
    """`cloudmfa serve` with two workers, as an operator runs it, on the Sentinels' master."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env |= {
        "CLOUDMFA_DATABASE_URL": backend["database_url"],
        "CLOUDMFA_REDIS_URL": sentinel_setup.url,
        "CLOUDMFA_REDIS_KEY_PREFIX": backend["redis_key_prefix"],
        "CLOUDMFA_SECRET_KEYS": TEST_SECRET_KEYS,
        "CLOUDMFA_MFA_POLICY": "optional",
    }
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*cloudmfa_command(), "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
            email = f"serve-sentinel-{secrets.token_hex(4)}@example.com"
            body = {"email": email, "password": PASSWORD}
            assert client.post("/api/v1/accounts", json=body).status_code == 201
            assert client.post("/api/v1/auth/login", json=body).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_serve_with_a_service_the_sentinels_do_not_know_fails_in_one_line(
    sentinel_setup: SentinelSetup, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env["CLOUDMFA_REDIS_URL"] = sentinel_setup.url.rsplit("/", 1)[0] + "/no-such-service"
    result = subprocess.run(
        [*cloudmfa_command(), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == (
        "cloudmfa: error: CLOUDMFA_REDIS_URL: cannot use this Redis: "
        "no Sentinel answers with a master for that service name"
    )

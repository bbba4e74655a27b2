"""Failing well (docs/operations.md "When storage does not answer"), against `cloudmfa serve`:
a Redis server of the test's own is stopped and started again, and PostgreSQL goes away and
comes back behind a TCP proxy the test owns. While either is down `/readyz` answers 503 and
the endpoints that need it answer 503 `unavailable` with `Retry-After`, never 500; once it is
back, the same process answers 200 again, without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import PG_DSN, TEST_SECRET_KEYS, PgDatabase, bearer
from serving import RedisServer, Serve, TcpProxy, clean_env, run_sync
from support import assert_problem

pytestmark = pytest.mark.slow

PASSWORD = "plum-orbit-velvet-canyon-42"
RECOVERY_TIMEOUT_S = 30


class Rig:
    def __init__(self, serve: Serve, redis: RedisServer, pg: TcpProxy) -> None:
        self.serve, self.redis, self.pg = serve, redis, pg
        self.client = serve.client()
        self.email = f"outage-{time.monotonic_ns()}@example.com"
        r = self.client.post("/api/v1/accounts", json={"email": self.email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        self.tokens = self.login()

    def login(self) -> dict[str, Any]:
        r = self.client.post("/api/v1/auth/login", json={"email": self.email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def requests_while_down(self) -> list[httpx.Response]:
        """A request of every kind: throttled sign-in endpoints, a Bearer call, refresh."""
        c = self.client
        return [
            c.post("/api/v1/auth/login", json={"email": self.email, "password": PASSWORD}),
            c.post("/api/v1/auth/login", json={"email": self.email, "password": "wrong-" * 3}),
            c.post("/api/v1/accounts", json={"email": "x" + self.email, "password": PASSWORD}),
            c.post("/api/v1/auth/refresh", json={"refresh_token": self.tokens["refresh_token"]}),
            c.get("/api/v1/me", headers=bearer(self.tokens["access_token"])),
            c.get("/api/v1/me/sessions", headers=bearer(self.tokens["access_token"])),
        ]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while (status := self.client.get("/readyz").status_code) != 200:
            assert status == 503, status
            if time.monotonic() > deadline:
                pytest.fail(f"/readyz stayed 503:\n{self.serve.output()[-3000:]}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = Path(tmp_path_factory.mktemp("outage"))
    db = PgDatabase()
    run_sync(db.create())
    redis = RedisServer(workdir)
    target = urlsplit(PG_DSN)
    pg = TcpProxy((target.hostname or "127.0.0.1", target.port or 5432))
    serve: Serve | None = None
    try:
        redis.start()
        pg.start()
        database_url = db.url.replace(
            f"{target.hostname}:{target.port or 5432}", f"127.0.0.1:{pg.port}"
        )
        env = clean_env(
            CLOUDMFA_DATABASE_URL=database_url,
            CLOUDMFA_REDIS_URL=redis.url,
            CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
            CLOUDMFA_MFA_POLICY="optional",
            CLOUDMFA_ARGON2_MEMORY_KIB="8192",
            CLOUDMFA_ARGON2_TIME_COST="1",
            CLOUDMFA_IP_RATE_LIMIT="100000/minute",
        )
        serve = Serve(workdir, env, "--workers", "1").start()
        rig = Rig(serve, redis, pg)
        yield rig
        rig.client.close()
    finally:
        if serve is not None:
            serve.kill()
        redis.stop()
        pg.stop()
        run_sync(db.drop())


def assert_unavailable(responses: list[httpx.Response]) -> None:
    for r in responses:
        problem = assert_problem(r, 503, "unavailable")
        assert int(r.headers["retry-after"]) >= 1, r.request.url
        assert "Traceback" not in r.text and "redis" not in problem["detail"].lower()


def test_ready_while_everything_answers(rig: Rig) -> None:
    assert rig.client.get("/readyz").json() == {"status": "ready"}


def test_redis_down_fails_closed_and_recovers_without_a_restart(rig: Rig) -> None:
    pid = rig.serve.proc.pid if rig.serve.proc else None
    rig.redis.stop()
    try:
        assert_problem(rig.client.get("/readyz"), 503, "unavailable")
        assert rig.client.get("/healthz").status_code == 200  # alive, not ready
        assert_unavailable(rig.requests_while_down())
    finally:
        rig.redis.start()  # an empty Redis on the same port, as after a restart
    rig.wait_ready()
    assert rig.serve.proc is not None and rig.serve.proc.pid == pid
    assert rig.login()["status"] == "authenticated"
    output = rig.serve.output()
    assert "Traceback" not in output, output[-3000:]
    assert "internal_error" not in output


def test_postgres_down_answers_503_and_recovers_without_a_restart(rig: Rig) -> None:
    pid = rig.serve.proc.pid if rig.serve.proc else None
    tokens = rig.login()
    rig.pg.stop()
    try:
        assert_problem(rig.client.get("/readyz"), 503, "unavailable")
        assert rig.client.get("/healthz").status_code == 200
        rig.tokens = tokens
        responses = rig.requests_while_down()
        # /me needs the database too (the account's state), so every call here is refused.
        assert_unavailable(responses)
    finally:
        rig.pg.start()
    rig.wait_ready()
    assert rig.serve.proc is not None and rig.serve.proc.pid == pid
    assert rig.login()["status"] == "authenticated"
    me = rig.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text
    assert "Traceback" not in rig.serve.output()


def test_a_hung_database_makes_readyz_answer_503_in_time(rig: Rig) -> None:
    """PostgreSQL still accepting connections but answering nothing: /readyz must not hang."""
    rig.pg.frozen.set()
    try:
        started = time.monotonic()
        assert_problem(rig.client.get("/readyz", timeout=30), 503, "unavailable")
        assert time.monotonic() - started < 10  # the 2 s readiness timeout, not the prober's
    finally:
        rig.pg.frozen.clear()
    rig.wait_ready()
    assert rig.login()["status"] == "authenticated"

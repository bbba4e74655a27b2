"""Two replicas (API.md "Throttling": "Limits hold across all worker processes and replicas"):
two ``cloudmfa serve --workers 2`` processes on one database and one Redis, started together
(so they also migrate and make the signing key at the same moment), with every request sent
to one of them in turn on a fresh connection, so to any of the four workers.

Run on PostgreSQL; CLOUDMFA_TEST_BACKENDS=mariadb-redis runs them on MariaDB instead (they pass
there too; the single-use guarantees on MariaDB are tested in-process, in tests/api, on every
run). Each test speaks from client addresses of its own (the
replicas trust X-Forwarded-For from 127.0.0.1, as behind a load balancer), so the per-IP
limit of one test does not reach into another's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import pytest_asyncio

from conftest import (
    FAST_ARGON2,
    FORCED_BACKENDS,
    PASSWORD,
    REDIS_URL,
    TEST_SECRET_KEYS,
    MariaDbDatabase,
    PgDatabase,
    bearer,
    drop_redis_prefix,
)
from support import cloudmfa_command, free_port

pytestmark = pytest.mark.slow

REPLICAS = 2
WORKERS = 2
MAX_FAILURES = 10  # CLOUDMFA_LOGIN_MAX_FAILURES
IP_LIMIT = 20  # CLOUDMFA_IP_RATE_LIMIT, per minute
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
CLI_TIMEOUT_S = 60
KEY_RELOAD_TIMEOUT_S = 45  # security/tokens.py RELOAD_INTERVAL_S (30 s), and some margin
_addresses = itertools.count(1)


def client_address() -> str:
    """An address from TEST-NET-3 (RFC 5737) no other request in this module comes from."""
    n = next(_addresses)
    return f"203.0.{n // 250}.{n % 250 + 1}"


def server_env(database_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env.update(
        PYTHONUNBUFFERED="1",
        CLOUDMFA_DATABASE_URL=database_url,
        CLOUDMFA_REDIS_URL=REDIS_URL,
        CLOUDMFA_REDIS_KEY_PREFIX=prefix,
        CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
        CLOUDMFA_MFA_POLICY="optional",
        CLOUDMFA_ARGON2_MEMORY_KIB=str(FAST_ARGON2["argon2_memory_kib"]),
        CLOUDMFA_ARGON2_TIME_COST=str(FAST_ARGON2["argon2_time_cost"]),
        CLOUDMFA_LOGIN_MAX_FAILURES=str(MAX_FAILURES),
        CLOUDMFA_IP_RATE_LIMIT=f"{IP_LIMIT}/minute",
        CLOUDMFA_TRUSTED_PROXIES="127.0.0.1",
        # One address in front of both, as a load balancer gives them: the tokens' issuer, the
        # same whichever replica signed (unset, each would name the port it serves on).
        CLOUDMFA_PUBLIC_URL="https://mfa.example.com",
        CLOUDMFA_PRUNE_INTERVAL_S="0",
    )
    return env


@dataclass
class Replica:
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_replica(workdir: Path, env: dict[str, str], name: str) -> Replica:
    port = free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*cloudmfa_command(), "serve", "--workers", str(WORKERS), "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the workers share its process group
        )
    return Replica(port, log_path, proc)


def wait_until_serving(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            pytest.fail(f"serve exited with {replica.proc.returncode}:\n{replica.log()[-6000:]}")
        if replica.log().count("Application startup complete") >= WORKERS:
            try:
                if httpx.get(replica.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"serve did not start {WORKERS} workers:\n{replica.log()[-6000:]}")


def stop(replica: Replica) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(replica.proc.pid, sig)
            replica.proc.wait(timeout=STOP_TIMEOUT_S)
            return
        except (ProcessLookupError, PermissionError):
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Cluster:
    """The replicas, and a client that sends each request to the next one, on a connection of
    its own."""

    replicas: list[Replica]
    env: dict[str, str]
    workdir: Path
    kids_before_rotation: set[str] = field(default_factory=set)
    rotated_kid: str = ""
    _turn: Iterator[int] = field(default_factory=lambda: itertools.cycle(range(REPLICAS)))

    def url(self, path: str, replica: int | None = None) -> str:
        index = next(self._turn) if replica is None else replica
        return self.replicas[index].base_url + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        ip: str,
        replica: int | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await client.request(
                method,
                self.url(path, replica),
                headers={"X-Forwarded-For": ip, **(headers or {})},
                **kwargs,
            )

    async def post(self, path: str, *, ip: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, ip=ip, **kwargs)

    async def get(self, path: str, *, ip: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, ip=ip, **kwargs)

    async def on_every_replica(
        self, method: str, path: str, *, ip: str, times: int = 4, **kwargs: Any
    ) -> list[httpx.Response]:
        """The same request ``times`` times to each replica, fresh connections each time (so to
        either of its workers, as the kernel hands them out)."""
        return [
            await self.request(method, path, ip=ip, replica=index, **kwargs)
            for index in range(REPLICAS)
            for _ in range(times)
        ]


@pytest_asyncio.fixture(
    scope="module",
    params=[kind for kind in FORCED_BACKENDS if kind != "sqlite-memory"] or ["postgres-redis"],
)
async def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    db = MariaDbDatabase() if request.param == "mariadb-redis" else PgDatabase()
    await db.create()
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"
    workdir = Path(tmp_path_factory.mktemp("replicas"))
    env = server_env(db.url, prefix)
    replicas: list[Replica] = []
    try:
        replicas = [start_replica(workdir, env, f"replica-{i}") for i in range(REPLICAS)]
        await asyncio.gather(*(asyncio.to_thread(wait_until_serving, r) for r in replicas))
        cluster = Cluster(replicas, env, workdir)
        # Rotated now, checked by the last test: the replicas notice a rotation made elsewhere
        # within their reload interval (30 s), which the tests in between mostly cover.
        jwks = (await cluster.get("/.well-known/jwks.json", ip=client_address())).json()
        cluster.kids_before_rotation = {key["kid"] for key in jwks["keys"]}
        cluster.rotated_kid = await asyncio.to_thread(rotate_signing_key, cluster)
        yield cluster
        for replica in replicas:  # none of the workers died and was replaced meanwhile
            assert replica.proc.poll() is None, replica.log()[-6000:]
    finally:
        for replica in replicas:
            await asyncio.to_thread(stop, replica)
        await drop_redis_prefix(prefix)
        await db.drop()


# --- journeys, over HTTP ----------------------------------------------------------------


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def sign_up(cluster: Cluster, tag: str) -> str:
    email = new_email(tag)
    r = await cluster.post(
        "/api/v1/accounts", ip=client_address(), json={"email": email, "password": PASSWORD}
    )
    assert r.status_code == 201, r.text
    return email


async def log_in(cluster: Cluster, email: str, **kwargs: Any) -> dict[str, Any]:
    r = await cluster.post(
        "/api/v1/auth/login",
        ip=client_address(),
        json={"email": email, "password": PASSWORD},
        **kwargs,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


@dataclass
class TotpUser:
    email: str
    factor_id: str
    totp: pyotp.TOTP
    activated_at: float  # the time whose code activated the factor (its step is spent)
    recovery_codes: list[str]

    def next_code(self) -> str:
        """The code of the step after the one activation spent: accepted (one step of drift
        either way, RFC 6238 §5.2) while the servers' clocks are within that step's
        neighbourhood, which the tests here stay well inside."""
        return self.totp.at(self.activated_at + 30)


async def totp_user(cluster: Cluster) -> TotpUser:
    email = await sign_up(cluster, "totp")
    headers = bearer((await log_in(cluster, email))["access_token"])
    r = await cluster.post(
        "/api/v1/me/factors", ip=client_address(), headers=headers, json={"type": "totp"}
    )
    assert r.status_code == 201, r.text
    factor = r.json()
    totp = pyotp.TOTP(factor["secret"])
    now = time.time()
    r = await cluster.post(
        f"/api/v1/me/factors/{factor['id']}/activate",
        ip=client_address(),
        headers=headers,
        json={"code": totp.at(now)},
    )
    assert r.status_code == 200, r.text
    return TotpUser(email, factor["id"], totp, now, r.json()["recovery_codes"])


async def verify(cluster: Cluster, mfa_token: str, factor_id: str, code: str) -> httpx.Response:
    return await cluster.post(
        "/api/v1/auth/verify",
        ip=client_address(),
        json={"mfa_token": mfa_token, "factor_id": factor_id, "code": code},
    )


def codes(responses: list[httpx.Response]) -> list[str]:
    return [r.json().get("code", "") if r.status_code >= 400 else "" for r in responses]


# --- the tests ---------------------------------------------------------------------------


async def test_the_account_limit_is_exact_under_a_burst_over_both_replicas(
    cluster: Cluster,
) -> None:
    email = await sign_up(cluster, "burst")
    burst = 40
    wrong = {"email": email, "password": "wrong-" + "x" * 20}
    answers = await asyncio.gather(
        *(cluster.post("/api/v1/auth/login", ip=client_address(), json=wrong) for _ in range(burst))
    )
    statuses = [r.status_code for r in answers]
    assert statuses.count(401) == MAX_FAILURES, statuses
    assert statuses.count(429) == burst - MAX_FAILURES, statuses
    assert {r.json()["code"] for r in answers} == {"invalid_credentials", "rate_limited"}

    # The right password is refused too, by every worker of both replicas.
    right = {"email": email, "password": PASSWORD}
    for r in await cluster.on_every_replica(
        "POST", "/api/v1/auth/login", ip=client_address(), json=right
    ):
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) > 0


async def test_the_per_ip_limit_is_exact_under_a_burst_over_both_replicas(
    cluster: Cluster,
) -> None:
    ip = client_address()
    burst = 50
    # A different unknown address each time, so the account limit plays no part.
    bodies = [{"email": new_email("nobody"), "password": "wrong-" + "x" * 20} for _ in range(burst)]
    answers = await asyncio.gather(
        *(cluster.post("/api/v1/auth/login", ip=ip, json=body) for body in bodies)
    )
    statuses = [r.status_code for r in answers]
    assert statuses.count(429) == burst - IP_LIMIT, statuses
    assert statuses.count(401) == IP_LIMIT, statuses
    # Another address is not affected.
    r = await cluster.post("/api/v1/auth/login", ip=client_address(), json=bodies[0])
    assert r.status_code == 401, r.text


async def test_a_logout_on_one_replica_is_refused_by_every_worker_of_both(
    cluster: Cluster,
) -> None:
    email = await sign_up(cluster, "logout")
    tokens = await log_in(cluster, email)
    headers = bearer(tokens["access_token"])
    ip = client_address()
    for r in await cluster.on_every_replica("GET", "/api/v1/me", ip=ip, headers=headers):
        assert r.status_code == 200, r.text
    r = await cluster.post("/api/v1/auth/logout", ip=ip, replica=1, headers=headers)
    assert r.status_code == 204, r.text
    for r in await cluster.on_every_replica("GET", "/api/v1/me", ip=ip, headers=headers):
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "invalid_token"
    r = await cluster.post(
        "/api/v1/auth/refresh", ip=ip, replica=0, json={"refresh_token": tokens["refresh_token"]}
    )
    assert r.status_code == 401, r.text


async def test_a_refresh_token_reused_on_the_other_replica_ends_the_session(
    cluster: Cluster,
) -> None:
    email = await sign_up(cluster, "reuse")
    first = await log_in(cluster, email)
    ip = client_address()
    r = await cluster.post(
        "/api/v1/auth/refresh", ip=ip, replica=0, json={"refresh_token": first["refresh_token"]}
    )
    assert r.status_code == 200, r.text
    second = r.json()
    headers = bearer(second["access_token"])
    for r in await cluster.on_every_replica("GET", "/api/v1/me", ip=ip, headers=headers):
        assert r.status_code == 200, r.text

    # The first token again, at the other replica: reuse, so the whole session ends.
    r = await cluster.post(
        "/api/v1/auth/refresh", ip=ip, replica=1, json={"refresh_token": first["refresh_token"]}
    )
    assert r.status_code == 401, r.text
    for r in await cluster.on_every_replica("GET", "/api/v1/me", ip=ip, headers=headers):
        assert r.status_code == 401, r.text
    r = await cluster.post(
        "/api/v1/auth/refresh", ip=ip, replica=0, json={"refresh_token": second["refresh_token"]}
    )
    assert r.status_code == 401, r.text


async def test_parallel_refreshes_of_one_token_over_both_replicas_let_one_through(
    cluster: Cluster,
) -> None:
    email = await sign_up(cluster, "refresh-race")
    tokens = await log_in(cluster, email)
    body = {"refresh_token": tokens["refresh_token"]}
    answers = await asyncio.gather(
        *(cluster.post("/api/v1/auth/refresh", ip=client_address(), json=body) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [401] * 7, [r.text for r in answers]


async def test_one_totp_code_sent_to_both_replicas_at_once_opens_one_session(
    cluster: Cluster,
) -> None:
    user = await totp_user(cluster)
    starts = await asyncio.gather(*(log_in(cluster, user.email) for _ in range(8)))
    assert all(s["status"] == "mfa_required" for s in starts), starts
    code = user.next_code()
    answers = await asyncio.gather(
        *(verify(cluster, s["mfa_token"], user.factor_id, code) for s in starts)
    )
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 1, [r.text for r in answers]
    assert set(codes(answers)) == {"", "invalid_code"}, [r.text for r in answers]

    # And the same code later, at either replica, is a replay.
    for replica in range(REPLICAS):
        start = await log_in(cluster, user.email)
        r = await cluster.post(
            "/api/v1/auth/verify",
            ip=client_address(),
            replica=replica,
            json={"mfa_token": start["mfa_token"], "factor_id": user.factor_id, "code": code},
        )
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "invalid_code"


async def test_one_recovery_code_sent_to_both_replicas_at_once_opens_one_session(
    cluster: Cluster,
) -> None:
    user = await totp_user(cluster)
    starts = await asyncio.gather(*(log_in(cluster, user.email) for _ in range(8)))
    factor_id = "recovery"  # API.md: recovery codes answer as the factor "recovery"
    code = user.recovery_codes[0]
    answers = await asyncio.gather(
        *(verify(cluster, s["mfa_token"], factor_id, code) for s in starts)
    )
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 1, [r.text for r in answers]
    assert set(codes(answers)) == {"", "invalid_code"}, [r.text for r in answers]
    # Another of the user's codes still works, once, on the other replica as well.
    start = await log_in(cluster, user.email)
    r = await verify(cluster, start["mfa_token"], factor_id, user.recovery_codes[1])
    assert r.status_code == 200, r.text


def rotate_signing_key(cluster: Cluster) -> str:
    result = subprocess.run(
        [*cloudmfa_command(), "rotate-signing-key"],
        cwd=cluster.workdir,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("new signing key ", 1)[1].split()[0]


async def test_a_signing_key_rotated_elsewhere_reaches_every_worker_of_both_replicas(
    cluster: Cluster,
) -> None:
    """`cloudmfa rotate-signing-key` (a third process, as an operator runs it, when the
    replicas had started) writes the new key to the database; each worker of each replica
    publishes it in its JWKS once it reloads its keys (every 30 s), before the key signs
    anything (PUBLISH_LEAD_S)."""
    ip = client_address()
    kid = cluster.rotated_kid
    assert kid and kid not in cluster.kids_before_rotation
    deadline = time.monotonic() + KEY_RELOAD_TIMEOUT_S
    while True:
        answers = await cluster.on_every_replica("GET", "/.well-known/jwks.json", ip=ip, times=6)
        published = [kid in {k["kid"] for k in r.json()["keys"]} for r in answers]
        if all(published):
            break
        assert time.monotonic() < deadline, f"not published everywhere: {published}"
        await asyncio.sleep(1)
    # Meanwhile the old key signs on (until the new one's lead time is up) and every worker
    # accepts what it signs.
    email = await sign_up(cluster, "rotation")
    headers = bearer((await log_in(cluster, email))["access_token"])
    for r in await cluster.on_every_replica("GET", "/api/v1/me", ip=ip, headers=headers):
        assert r.status_code == 200, r.text

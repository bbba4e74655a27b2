"""The account throttle holds across worker processes (API.md "Throttling": "Limits hold across
all worker processes and replicas"): ``cloudmfa serve --workers 2`` on PostgreSQL and Redis, a
burst of wrong passwords spread over many connections, and never more than 10 evaluated.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    FAST_ARGON2,
    PASSWORD,
    REDIS_URL,
    TEST_SECRET_KEYS,
    PgDatabase,
    drop_redis_prefix,
)
from support import cloudmfa_command, free_port

pytestmark = pytest.mark.slow

WORKERS = 2
MAX_FAILURES = 10
BURST = 40
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20


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
        # Every request here comes from 127.0.0.1; this test is about the account limit.
        CLOUDMFA_IP_RATE_LIMIT="100000/minute",
    )
    return env


def start_server(
    workdir: Path, env: dict[str, str], port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*cloudmfa_command(), "serve", "--workers", str(WORKERS), "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the workers share its process group
        )


def worker_pids(log: str) -> set[str]:
    return set(re.findall(r"Started server process \[(\d+)\]", log))


def wait_until_serving(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    """Every worker has finished starting, and the service answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        log = log_path.read_text(errors="replace")
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}:\n{log[-6000:]}")
        if log.count("Application startup complete") >= WORKERS:
            try:
                if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(
        f"serve did not start {WORKERS} workers within {START_TIMEOUT_S} s:\n"
        f"{log_path.read_text(errors='replace')[-6000:]}"
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever worker is left
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()


async def test_account_throttle_holds_across_workers(tmp_path: Path) -> None:
    db = PgDatabase()
    await db.create()
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = start_server(tmp_path, server_env(db.url, prefix), port, log_path)
        await asyncio.to_thread(wait_until_serving, proc, base_url, log_path)
        log = log_path.read_text(errors="replace")
        assert len(worker_pids(log)) == WORKERS, log[-6000:]

        email = f"burst-{uuid.uuid4().hex[:10]}@example.com"
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            r = await client.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
            assert r.status_code == 201, r.text

        # One connection per request, all at once: the kernel hands them to both workers.
        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as burst:
            responses = await asyncio.gather(
                *(
                    burst.post(
                        "/api/v1/auth/login", json={"email": email, "password": "wrong-" + "x" * 20}
                    )
                    for _ in range(BURST)
                )
            )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {401, 429}, [
            r.text for r in responses if r.status_code not in (401, 429)
        ]
        assert statuses.count(401) <= MAX_FAILURES, statuses
        assert statuses.count(401) + statuses.count(429) == BURST
        for r in responses:
            body = r.json()
            if r.status_code == 401:
                assert body["code"] == "invalid_credentials"
            else:
                assert body["code"] == "rate_limited"
                assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) > 0

        # The right password, on fresh connections (so on either worker), is refused too.
        for _ in range(4):
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
                r = await client.post(
                    "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
                )
            assert r.status_code == 429, r.text
            assert r.json()["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) > 0

        # /metrics counts every worker's answers, whichever worker is scraped (serve gives the
        # workers a shared metrics directory of its own).
        for _ in range(4):
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
                scrape = await client.get("/metrics")
            assert scrape.status_code == 200
            assert login_answers_counted(scrape.text) == BURST + 4

        # Both workers are still the ones that started (none died and was replaced).
        assert worker_pids(log_path.read_text(errors="replace")) == worker_pids(log)
    finally:
        if proc is not None:
            await asyncio.to_thread(kill_group, proc)
        await drop_redis_prefix(prefix)
        await db.drop()


def login_answers_counted(exposition: str) -> int:
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if (
                sample.name == "cloudmfa_http_requests_total"
                and sample.labels.get("route") == "/api/v1/auth/login"
                and sample.labels.get("method") == "POST"
            ):
                total += sample.value
    return int(total)

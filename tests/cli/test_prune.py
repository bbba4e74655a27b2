"""``cloudmfa prune``: one run deletes what is past its use (an ended session, a factor never
activated), keeps the rest (a live session, a young pending factor, the audit trail), and says
what it removed in one line.

The rows are made in-process through the HTTP app on a SQLite database, some of them by an app
whose clock stands two days back; the command runs as a real subprocess, on the real clock,
against the same file.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cloudmfa.clock import FrozenClock
from cloudmfa.store.models import factors, sessions
from conftest import FAST_ARGON2, TEST_SECRET_KEYS, bearer, start_api
from conftest import test_settings as make_settings
from support import cloudmfa_command

pytestmark = pytest.mark.slow

CLI_TIMEOUT_S = 120


def db_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'cloudmfa.db'}"


def run_prune(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env.update(
        CLOUDMFA_DATA_DIR=str(data_dir),
        CLOUDMFA_DATABASE_URL=db_url(data_dir),
        CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
        CLOUDMFA_ARGON2_MEMORY_KIB=str(FAST_ARGON2["argon2_memory_kib"]),
        CLOUDMFA_ARGON2_TIME_COST=str(FAST_ARGON2["argon2_time_cost"]),
    )
    return subprocess.run(
        [*cloudmfa_command(), "prune"],
        cwd=data_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def test_prune_removes_what_is_past_its_use_and_says_what(tmp_path: Path) -> None:
    settings = make_settings(
        {"database_url": db_url(tmp_path), "redis_url": None}, data_dir=str(tmp_path)
    )
    now = datetime.now(UTC).replace(microsecond=0)
    app, api = await start_api(settings, FrozenClock(now - timedelta(days=2)))
    async with app.router.lifespan_context(app), api.client:
        account = await api.sign_up()
        ended = await api.login(account["email"])
        r = await api.client.post(
            "/api/v1/me/factors", json={"type": "totp"}, headers=bearer(ended["access_token"])
        )
        assert r.status_code == 201, r.text  # never activated
        r = await api.client.post("/api/v1/auth/logout", headers=bearer(ended["access_token"]))
        assert r.status_code == 204, r.text
        api.clock.advance(days=2)  # back to the real time: this session is live
        live = await api.login(account["email"])
        r = await api.client.post(
            "/api/v1/me/factors", json={"type": "totp"}, headers=bearer(live["access_token"])
        )
        assert r.status_code == 201, r.text
        fresh_factor = r.json()["id"]

    result = await asyncio.to_thread(run_prune, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    assert re.fullmatch(
        r"removed 1 refresh token\(s\), 1 ended session\(s\), 0 expired remembered device\(s\), "
        r"1 pending factor\(s\), 0 audit event\(s\), 0 delivered or failed message\(s\)\n",
        result.stdout,
    ), result.stdout

    app, api = await start_api(settings)
    async with app.router.lifespan_context(app), api.client:
        async with api.svc.reader.connect() as conn:
            kept_sessions = set((await conn.execute(select(sessions.c.id))).scalars())
            kept_factors = set((await conn.execute(select(factors.c.id))).scalars())
        assert kept_sessions == {live["session_id"]}
        assert kept_factors == {fresh_factor}
        r = await api.client.get("/api/v1/me", headers=bearer(live["access_token"]))
        assert r.status_code == 200, r.text

"""``cloudmfa audit verify`` and ``cloudmfa audit export`` as real subprocesses, on SQLite and
PostgreSQL: exit 0 on a whole chain, 1 naming the first broken event; JSON lines, `--since`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from cloudmfa.store.audit_chain import format_time
from cloudmfa.store.models import audit_events
from conftest import TEST_SECRET_KEYS, fresh_backend, start_api
from conftest import test_settings as make_settings

pytestmark = pytest.mark.slow

CLI_TIMEOUT_S = 120


def run_audit(backend: dict[str, Any], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from support import cloudmfa_command

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env.update(
        CLOUDMFA_DATA_DIR=str(cwd),
        CLOUDMFA_DATABASE_URL=backend["database_url"],
        CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
    )
    return subprocess.run(
        [*cloudmfa_command(), "audit", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("kind", ["sqlite-memory", "postgres-redis"])
async def test_verify_and_export(kind: str, tmp_path: Path) -> None:
    async with fresh_backend(kind, tmp_path) as backend:
        app, api = await start_api(make_settings(backend, audit_seal_interval_s=0))
        async with app.router.lifespan_context(app), api.client:
            first = await api.sign_up()
            api.clock.advance(hours=2)
            since = api.svc.clock.now()
            second = await api.sign_up()
            await api.login(second["email"])

        # Nothing is chained yet: verify chains it, then finds it whole.
        result = await asyncio.to_thread(run_audit, backend, tmp_path, "verify")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("audit trail whole: 3 event(s) checked; head at position 3")

        result = await asyncio.to_thread(run_audit, backend, tmp_path, "export")
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(x["type"], x["subject_id"] or x["actor_id"]) for x in lines] == [
            ("account.created", first["id"]),
            ("account.created", second["id"]),
            ("login.succeeded", second["id"]),
        ]
        assert [x["chain_seq"] for x in lines] == [1, 2, 3]

        stamp = format_time(since - timedelta(minutes=1)).replace(".000000", "")
        result = await asyncio.to_thread(run_audit, backend, tmp_path, "export", "--since", stamp)
        assert result.returncode == 0, result.stderr
        assert [json.loads(x)["chain_seq"] for x in result.stdout.splitlines()] == [2, 3]

        result = await asyncio.to_thread(
            run_audit, backend, tmp_path, "export", "--since", "last tuesday"
        )
        assert result.returncode == 2 and "ISO 8601" in result.stderr

        async with api.svc.engine.begin() as conn:
            await conn.execute(
                update(audit_events)
                .where(audit_events.c.id == lines[1]["id"])
                .values(details={"note": "nothing happened"})
            )
        await api.svc.engine.dispose()
        result = await asyncio.to_thread(run_audit, backend, tmp_path, "verify")
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            f"cloudmfa: audit trail broken: event {lines[1]['id']} at position 2 was changed "
            "(its content or its link does not match)\n"
        )

"""Pruning rows past their use (flows/maintenance.py, store/prune.py): what goes and, as
important, what stays, on SQLite + the in-process store, PostgreSQL + Redis and MariaDB + Redis
(where a LIMIT inside an IN subquery is refused: store/prune.py).

The rows are made over HTTP, as clients make them, on an app whose clock the test moves; each
test gets a database of its own, so the counts the prune reports are the test's rows alone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, func, select

from cloudmfa.app import create_app
from cloudmfa.clock import SystemClock
from cloudmfa.flows import maintenance
from cloudmfa.flows.maintenance import PruneReport
from cloudmfa.security.tokens import hash_opaque_token
from cloudmfa.services import Services
from cloudmfa.store import devices as device_repo
from cloudmfa.store import outbox as outbox_repo
from cloudmfa.store.models import (
    audit_events,
    delivery_outbox,
    factors,
    refresh_tokens,
    remembered_devices,
    sessions,
)
from conftest import ALL_BACKENDS, PASSWORD, Api, bearer, fresh_backend, start_api
from conftest import test_settings as make_settings
from support import mfa_sign_in, mfa_user

# The grace after a session ends: an access token's lifetime (600 s by default) plus a minute.
PAST_GRACE = timedelta(seconds=600 + 60 + 1)


@pytest.fixture(params=ALL_BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def fresh_api(kind: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    async with fresh_backend(kind, tmp_path) as backend:
        app, api = await start_api(make_settings(backend, **overrides))
        async with app.router.lifespan_context(app), api.client:
            yield api


async def prune_now(api: Api, batch_size: int = maintenance.PRUNE_BATCH_SIZE) -> PruneReport:
    retention = maintenance.retention_for(api.svc)
    return await maintenance.prune(
        api.svc.engine, retention, api.clock.now(), batch_size=batch_size
    )


async def column(api: Api, table: Table, name: str) -> set[Any]:
    async with api.svc.reader.connect() as conn:
        return set((await conn.execute(select(table.c[name]))).scalars())


async def count(api: Api, table: Table) -> int:
    async with api.svc.reader.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def refresh(api: Api, refresh_token: str) -> dict[str, Any]:
    r = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_ended_sessions_go_after_the_grace_and_live_ones_stay_usable(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_api(kind, tmp_path) as api:
        account = await api.sign_up()
        live = await api.login(account["email"])
        live_next = await refresh(api, live["refresh_token"])  # the first token is now used
        ended = await api.login(account["email"])
        ended_next = await refresh(api, ended["refresh_token"])
        r = await api.client.post("/api/v1/auth/logout", headers=bearer(ended_next["access_token"]))
        assert r.status_code == 204, r.text

        api.clock.advance(minutes=1)
        report = await prune_now(api)
        # The ended session's used token goes at once; the session and its unused token stay
        # while its access tokens may still be presented (and must be refused as revoked).
        assert report == PruneReport(refresh_tokens=1)
        assert await column(api, sessions, "id") == {live["session_id"], ended["session_id"]}
        kept = (live["refresh_token"], live_next["refresh_token"], ended_next["refresh_token"])
        assert await column(api, refresh_tokens, "token_hash") == {
            hash_opaque_token(t) for t in kept
        }

        api.clock.advance(seconds=PAST_GRACE.total_seconds())
        report = await prune_now(api)
        assert report == PruneReport(sessions=1, refresh_tokens=1)
        assert await column(api, sessions, "id") == {live["session_id"]}
        # The live session's unused refresh token still works after the prune...
        third = await refresh(api, live_next["refresh_token"])
        assert third["session_id"] == live["session_id"]
        # ...and its used one was kept, so presenting it again is still caught as reuse.
        r = await api.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": live["refresh_token"]}
        )
        assert r.status_code == 401, r.text
        r = await api.client.get("/api/v1/me", headers=bearer(third["access_token"]))
        assert r.status_code == 401, r.text  # the reuse revoked the session


async def test_expired_sessions_go_with_their_tokens_after_the_grace(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_api(kind, tmp_path) as api:
        account = await api.sign_up()
        old = await api.login(account["email"])
        await refresh(api, old["refresh_token"])
        api.clock.advance(hours=23, minutes=59)
        young = await api.login(account["email"])

        api.clock.advance(minutes=2)  # a minute past the first session's 24 h maximum
        assert await prune_now(api) == PruneReport(refresh_tokens=1)  # its used token, at once
        assert await column(api, sessions, "id") == {old["session_id"], young["session_id"]}

        api.clock.advance(seconds=PAST_GRACE.total_seconds())
        assert await prune_now(api) == PruneReport(sessions=1, refresh_tokens=1)
        assert await column(api, sessions, "id") == {young["session_id"]}
        assert await column(api, refresh_tokens, "token_hash") == {
            hash_opaque_token(young["refresh_token"])
        }


async def test_pending_factors_go_after_a_day_and_active_ones_stay(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_api(kind, tmp_path) as api:
        user = await mfa_user(api)
        _, headers = await api.signed_in("pending")
        r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
        assert r.status_code == 201, r.text
        pending = r.json()["id"]

        api.clock.advance(hours=23, minutes=59)
        await prune_now(api)
        assert await column(api, factors, "id") == {user.factor_id, pending}

        api.clock.advance(minutes=2)
        report = await prune_now(api)
        assert report.pending_factors == 1
        assert await column(api, factors, "id") == {user.factor_id}


async def test_the_pending_factor_limit_is_configurable(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path, pending_factor_max_hours=2) as api:
        _, headers = await api.signed_in("pending")
        r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
        assert r.status_code == 201, r.text
        api.clock.advance(hours=2, seconds=1)
        assert (await prune_now(api)).pending_factors == 1
        assert await column(api, factors, "id") == set()


async def test_expired_remembered_devices_go_and_live_ones_stay(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        user = await mfa_user(api)
        await mfa_sign_in(api, user, remember=True)
        api.clock.advance(days=10)
        await mfa_sign_in(api, user, remember=True)
        first, second = sorted(
            await column(api, remembered_devices, "expires_at"), key=lambda at: at
        )

        api.clock.advance(days=20, seconds=1)  # 30 days after the first
        assert (await prune_now(api)).remembered_devices == 1
        assert await column(api, remembered_devices, "expires_at") == {second}
        assert first < api.clock.now() < second


async def test_audit_events_are_kept_forever_by_default(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        await api.signed_in()
        events = await count(api, audit_events)
        assert events > 0
        api.clock.advance(days=3650)
        assert (await prune_now(api)).audit_events == 0
        assert await count(api, audit_events) == events


async def test_audit_events_older_than_the_retention_go(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path, audit_retention_days=7) as api:
        await api.signed_in("old")
        old_events = await column(api, audit_events, "id")
        api.clock.advance(days=7, seconds=-1)
        await api.signed_in("recent")
        recent_events = await column(api, audit_events, "id") - old_events

        assert (await prune_now(api)).audit_events == 0  # the old ones are not 7 days old yet
        api.clock.advance(seconds=2)
        assert (await prune_now(api)).audit_events == len(old_events)
        assert await column(api, audit_events, "id") == recent_events


async def test_prune_works_through_many_batches(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        account = await api.sign_up()
        for _ in range(5):
            tokens = await api.login(account["email"])
            await api.client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
        api.clock.advance(seconds=PAST_GRACE.total_seconds())
        report = await prune_now(api, batch_size=2)
        assert report == PruneReport(sessions=5, refresh_tokens=5)
        assert await count(api, sessions) == 0


async def test_a_prune_past_its_deadline_stops_and_says_so(kind: str, tmp_path: Path) -> None:
    async with fresh_api(kind, tmp_path) as api:
        tokens = await api.login((await api.sign_up())["email"])
        await api.client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
        api.clock.advance(seconds=PAST_GRACE.total_seconds())
        retention = maintenance.retention_for(api.svc)
        report = await maintenance.prune(api.svc.engine, retention, api.clock.now(), deadline=0)
        assert report == PruneReport(complete=False)
        assert await count(api, sessions) == 1


# --- in the background of the service --------------------------------------------------------


async def wait_for(condition: Any, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_the_service_prunes_in_the_background(kind: str, tmp_path: Path) -> None:
    async with fresh_backend(kind, tmp_path) as backend:
        settings = make_settings(backend, prune_interval_s=1)
        app = create_app(settings, clock=SystemClock())  # the lease expires in real time
        svc: Services = app.state.services
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        ):
            email = Api.new_email()
            r = await client.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
            assert r.status_code == 201, r.text
            expired = await _insert_device(svc, r.json()["id"], expires_in=timedelta(days=-1))
            live = await _insert_device(svc, r.json()["id"], expires_in=timedelta(days=1))
            await wait_for(lambda: _device_ids(svc, {expired, live}, {live}))
            # The next runs, a second apart, keep the live device.
            await asyncio.sleep(2.5)
            assert await _device_ids(svc, {expired, live}, {live})
        # Leaving the lifespan stopped the pruning task.
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "cloudmfa-prune"]


async def test_a_failing_prune_is_logged_and_tried_again(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with fresh_backend(kind, tmp_path) as backend:
        svc = Services.build(make_settings(backend, prune_interval_s=1), clock=SystemClock())
        caplog.set_level(logging.INFO, logger="cloudmfa")
        task = asyncio.create_task(maintenance.prune_periodically(svc, first_delay_s=0))
        try:
            # No schema yet: each prune fails, and the loop carries on.
            await wait_for(lambda: _logged(caplog, "pruning failed"))
            assert not task.done()
            await svc.start(migrate=True)
            await wait_for(lambda: _logged(caplog, "pruned 0 refresh token(s)"))
        finally:
            await maintenance.stop_pruning(task)
            await svc.close()


async def test_one_worker_prunes_per_interval(tmp_path: Path) -> None:
    """Two workers sharing Redis: one takes the lease and prunes, the other skips."""
    async with fresh_backend("postgres-redis", tmp_path) as backend:
        settings = make_settings(backend, prune_interval_s=3600)
        workers = [Services.build(settings) for _ in range(2)]
        try:
            await workers[0].start(migrate=True)
            await workers[1].start()
            results = await asyncio.gather(*(maintenance.prune_if_due(w) for w in workers))
            assert sorted(r is None for r in results) == [False, True]
            assert await maintenance.prune_if_due(workers[0]) is None  # not due again yet
        finally:
            for w in workers:
                await w.close()


async def _insert_device(svc: Services, user_id: str, *, expires_in: timedelta) -> str:
    device_id = "device-" + secrets.token_hex(4)
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        await device_repo.insert_device(
            conn,
            device_id=device_id,
            user_id=user_id,
            token_hash=secrets.token_hex(32),
            now=now - timedelta(days=30),
            expires_at=now + expires_in,
            ip=None,
            user_agent=None,
        )
    return device_id


async def _device_ids(svc: Services, among: set[str], expected: set[str]) -> bool:
    async with svc.reader.connect() as conn:
        rows = await conn.execute(
            select(remembered_devices.c.id).where(remembered_devices.c.id.in_(among))
        )
        return set(rows.scalars()) == expected


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def test_sent_and_failed_messages_go_after_the_retention_and_queued_ones_stay(
    kind: str, tmp_path: Path
) -> None:
    """The outbox keeps a sent or failed row for CLOUDMFA_DELIVERY_RETENTION_HOURS after it
    finished; a message still waiting (a retry not yet due, a claim under its lease) is kept
    however old, and so is a younger finished one."""
    async with fresh_api(kind, tmp_path, delivery_retention_hours=1) as api:
        start = api.clock.now()
        far = start + timedelta(hours=10)  # neither due nor lapsed while the test runs

        async def row(claim_until: datetime | None = None) -> outbox_repo.Claimed | None:
            new = outbox_repo.NewRow(
                str(uuid.uuid4()), "sms", b"sealed", api.clock.now(), None, None
            )
            async with api.svc.engine.begin() as conn:
                await outbox_repo.insert_row(conn, new)
                if claim_until is None:
                    return None
                return await outbox_repo.claim(
                    conn, new.id, now=api.clock.now(), lease_until=claim_until
                )

        async def finish(held: outbox_repo.Claimed | None, how: str) -> str:
            assert held is not None
            async with api.svc.engine.begin() as conn:
                now = api.clock.now()
                if how == "sent":
                    assert await outbox_repo.mark_sent(conn, held, now=now, provider="webhook")
                elif how == "failed":
                    assert await outbox_repo.mark_failed(conn, held, now=now, reason="refused")
                else:
                    assert await outbox_repo.mark_retry(conn, held, at=far, reason="throttled")
            return held.id

        old_sent = await finish(await row(far), "sent")
        old_failed = await finish(await row(far), "failed")
        waiting_retry = await finish(await row(far), "retry")
        held_claim = (await row(far)) or pytest.fail("not claimed")
        api.clock.advance(minutes=50)
        young_sent = await finish(await row(far), "sent")

        api.clock.advance(minutes=9)  # the old ones finished 59 minutes ago
        assert (await prune_now(api)).messages == 0
        api.clock.advance(minutes=2)
        assert (await prune_now(api)).messages == 2
        kept = await column(api, delivery_outbox, "id")
        assert kept == {waiting_retry, held_claim.id, young_sent}
        assert not {old_sent, old_failed} & kept

"""Where SQLite, PostgreSQL and MariaDB/MySQL differ, held to one behaviour on each: the
migrations both ways, text compared exactly whatever the server's collation, times to the
microsecond in UTC, claims that count matched rows, RETURNING where MariaDB has none, and the
lock that lets replicas start together (store/db.py, store/models.py, the migrations)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError

from cloudmfa.config import normalise_database_url
from cloudmfa.delivery.base import Message
from cloudmfa.delivery.outbox import DatabaseOutbox, unseal
from cloudmfa.services import Services
from cloudmfa.store import claims
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import AuditEvent, list_events
from cloudmfa.store.claims import AdvanceCounter, UseFactor
from cloudmfa.store.db import create_engine, is_mysql
from cloudmfa.store.migrate import alembic_config, head_revision, upgrade_to_head
from cloudmfa.store.models import delivery_outbox, metadata, signing_keys, users
from conftest import ALL_BACKENDS, PASSWORD, Api, bearer
from conftest import test_settings as make_settings
from support import assert_problem, mfa_user

BACKENDS = ALL_BACKENDS


def _not_postgres_only(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
    # The admin search's indexes (migrations 0006 and 0008: trigrams, the emails by code point)
    # are PostgreSQL's own and not declared in models.py.
    postgres_only = (name or "").endswith("_trgm") or name == "ix_users_email_by_code_point"
    return not (kind == "index" and reflected and postgres_only)


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": _not_postgres_only}
    )
    return list(compare_metadata(context, metadata))


def _downgrade_to_base(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "base")


async def test_every_migration_goes_up_and_down_again(backend: dict[str, Any]) -> None:
    engine = create_engine(normalise_database_url(backend["database_url"]))
    try:
        assert await upgrade_to_head(engine) == head_revision()
        async with engine.connect() as conn:
            # What the migrations built is what models.py describes, on this database too.
            assert await conn.run_sync(_schema_differences) == []
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade_to_base)
        async with engine.connect() as conn:
            left = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert left <= {"alembic_version"}
        assert await upgrade_to_head(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_replicas_starting_together_migrate_once_and_make_one_signing_key(
    backend: dict[str, Any],
) -> None:
    """Four services start at once on a fresh database: one migrates and makes the signing
    key, the others wait for it (serialised in store/db.py) and find both done."""
    replicas = [Services.build(make_settings(backend)) for _ in range(4)]
    try:
        await asyncio.gather(*(svc.start() for svc in replicas))
        async with replicas[0].engine.connect() as conn:
            keys = (await conn.execute(select(func.count()).select_from(signing_keys))).scalar()
        assert keys == 1
        kids = {svc.tokens.ring.jwks()["keys"][0]["kid"] for svc in replicas}
        assert len(kids) == 1  # every replica signs with the same key
    finally:
        for svc in replicas:
            await svc.close()


async def test_addresses_differing_by_an_accent_are_different_accounts(api: Api) -> None:
    """MariaDB's default collation compares "jose" and "josé" as equal: the tables compare text
    exactly, so neither address finds the other's account (nor is refused as taken)."""
    tag = uuid.uuid4().hex[:8]
    plain = await api.sign_up(f"jose-{tag}@example.com")
    accented = await api.sign_up(f"josé-{tag}@example.com", password=PASSWORD + "-other")
    assert plain["id"] != accented["id"]

    tokens = await api.login(plain["email"])
    r = await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert r.json()["id"] == plain["id"]
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": accented["email"], "password": PASSWORD}
    )
    assert_problem(r, 401, "invalid_credentials")  # the other account's password


async def test_times_keep_their_microseconds_and_come_back_in_utc(api: Api) -> None:
    user = await api.sign_up()
    moment = datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with api.svc.engine.begin() as conn:
        await user_repo.set_locked(conn, user["id"], moment, api.clock.now())
    async with api.svc.engine.connect() as conn:
        stored = await user_repo.get_by_id(conn, user["id"])
    assert stored is not None and stored.locked_at is not None
    assert stored.locked_at == moment
    assert stored.locked_at.tzinfo == UTC
    assert stored.locked_at.microsecond == 123456


async def test_a_claim_counts_the_rows_it_matched_not_the_ones_it_changed(api: Api) -> None:
    """A claim that records a use at the instant already recorded changes no value: it still
    matched (MariaDB counts matched rows only when asked to, which SQLAlchemy does). A spent
    counter matches nothing."""
    user = await mfa_user(api)
    now = api.clock.now()  # the activation recorded this instant already
    async with api.svc.engine.begin() as conn:
        for _ in range(2):
            assert await claims.apply(conn, UseFactor(user.factor_id), user_id=user.id, now=now)
        step = AdvanceCounter(user.factor_id, 10**12)
        assert await claims.apply(conn, step, user_id=user.id, now=now)
        assert not await claims.apply(conn, step, user_id=user.id, now=now)
        assert not await claims.apply(
            conn, AdvanceCounter(user.factor_id, 5), user_id=user.id, now=now
        )


async def test_parallel_refreshes_of_one_token_let_one_through_and_end_the_session(
    api: Api,
) -> None:
    """The refresh token is spent by an UPDATE … RETURNING, on MariaDB a locking read and an
    UPDATE (store/db.py update_returning): of parallel refreshes one wins, the others count as
    reuse and end the session, the winner's new tokens with it."""
    account = await api.sign_up()
    tokens = await api.login(account["email"])
    answers = await asyncio.gather(
        *(
            api.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
            for _ in range(6)
        )
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [401] * 5, [r.text for r in answers]
    winner = next(r.json() for r in answers if r.status_code == 200)
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": winner["refresh_token"]}
    )
    assert_problem(r, 401, "invalid_token")
    r = await api.client.get("/api/v1/me", headers=bearer(winner["access_token"]))
    assert_problem(r, 401, "invalid_token")


async def test_parallel_logouts_of_one_session_revoke_it_once(api: Api) -> None:
    account = await api.sign_up()
    tokens = await api.login(account["email"])
    headers = bearer(tokens["access_token"])
    answers = await asyncio.gather(
        *(api.client.post("/api/v1/auth/logout", headers=headers) for _ in range(4))
    )
    assert {r.status_code for r in answers} <= {204, 401}, [r.text for r in answers]
    assert any(r.status_code == 204 for r in answers)
    async with api.svc.engine.connect() as conn:
        events = await list_events(conn, user_id=account["id"], type_="session.revoked")
    assert len(events) == 1, events  # the session was revoked once, by one of them


async def test_a_value_too_long_for_its_column_is_refused_not_cut_short(
    backend: dict[str, Any],
) -> None:
    """PostgreSQL refuses it; MariaDB/MySQL would cut it short silently in a non-strict
    sql_mode, which the service never runs in (store/db.py). SQLite keeps text whole."""
    engine = create_engine(normalise_database_url(backend["database_url"]))
    now = datetime.now(UTC)
    row = {"id": str(uuid.uuid4()), "password_hash": "x", "roles": [], "created_at": now}
    long_email = "a" * 310 + "@example.com"  # 322 characters; the column holds 320
    try:
        await upgrade_to_head(engine)
        statement = insert(users).values(**row, email=long_email, updated_at=now)
        if engine.dialect.name == "sqlite":  # no length to enforce: kept whole, not cut short
            async with engine.begin() as conn:
                await conn.execute(statement)
            async with engine.connect() as conn:
                stored = await conn.scalar(select(users.c.email).where(users.c.id == row["id"]))
            assert stored == long_email
            return
        with pytest.raises(DBAPIError):
            async with engine.begin() as conn:
                await conn.execute(statement)
        if is_mysql(engine):  # the service's own mode, not the server's default (which lacks it)
            async with engine.connect() as conn:
                assert "STRICT_ALL_TABLES" in await conn.scalar(text("SELECT @@SESSION.sql_mode"))
    finally:
        await engine.dispose()


async def test_a_message_and_its_audit_event_are_written_together(api: Api) -> None:
    """The challenge step's one write (delivery/outbox.py ``submit_with_events``): a single
    statement on PostgreSQL, a transaction elsewhere. The sealed message comes back whole
    (bytes through PostgreSQL's JSON), the event beside it, stamped with the row's time."""
    user = await api.sign_up()
    outbox = api.svc.outbox
    assert isinstance(outbox, DatabaseOutbox)
    message = Message("sms", "+14155550100", "Your code", "Your code is 123456")
    event = AuditEvent("mfa.challenge_sent", subject_id=user["id"], details={"channel": "sms"})

    row_id = await outbox.submit_with_events(
        message, [event], user_id=user["id"], binding="attempt:a:f"
    )

    async with api.svc.engine.connect() as conn:
        row = (
            await conn.execute(select(delivery_outbox).where(delivery_outbox.c.id == row_id))
        ).one()
        [stored] = await list_events(conn, user_id=user["id"], type_="mfa.challenge_sent")
    assert (row.status, row.attempts, row.channel, row.user_id) == ("queued", 0, "sms", user["id"])
    assert unseal(api.svc.secretbox, row_id, "sms", bytes(row.sealed)) == message
    assert stored["details"] == {"channel": "sms"}
    assert stored["at"] == row.created_at == row.next_try_at


async def test_a_message_whose_audit_event_fails_is_not_written(api: Api) -> None:
    """All or nothing: an event the table refuses (no outcome) leaves no message behind."""
    user = await api.sign_up()
    outbox = api.svc.outbox
    assert isinstance(outbox, DatabaseOutbox)
    message = Message("sms", "+14155550100", "Your code", "Your code is 123456")
    refused = AuditEvent("mfa.challenge_sent", outcome=None, subject_id=user["id"])  # type: ignore[arg-type]

    # PostgreSQL's statement runs on asyncpg itself (store/one_statement.py): its own error.
    with pytest.raises((DBAPIError, asyncpg.PostgresError)):
        await outbox.submit_with_events(message, [refused], user_id=user["id"])

    async with api.svc.engine.connect() as conn:
        rows = await conn.scalar(
            select(func.count())
            .select_from(delivery_outbox)
            .where(delivery_outbox.c.user_id == user["id"])
        )
        events = await list_events(conn, user_id=user["id"], type_="mfa.challenge_sent")
    assert (rows, events) == (0, [])


async def test_a_factor_is_read_with_its_account_in_one_statement(api: Api) -> None:
    """The challenge step's one read (store/factors.py ``get_with_account``)."""
    user = await mfa_user(api)
    other = await mfa_user(api)
    async with api.svc.engine.begin() as conn:
        await user_repo.set_locked(conn, other.id, api.clock.now(), api.clock.now())

    async with api.svc.reader.connect() as conn:
        found = await factor_repo.get_with_account(conn, user.factor_id, user.id)
        not_theirs = await factor_repo.get_with_account(conn, other.factor_id, user.id)
        locked = await factor_repo.get_with_account(conn, other.factor_id, other.id)
        nobody = await factor_repo.get_with_account(conn, user.factor_id, str(uuid.uuid4()))

    assert found is not None and not found.account_locked
    assert found.factor is not None and found.factor.id == user.factor_id
    assert (found.factor.type, found.factor.status, found.factor.user_id) == (
        "totp",
        "active",
        user.id,
    )
    assert not_theirs is not None and not_theirs.factor is None
    assert locked is not None and locked.account_locked and locked.factor is not None
    assert nobody is None

"""Migration 0004 re-normalises emails stored in an older spelling, so login (which looks up
by ``normalise_email``) finds their accounts; it never merges two accounts into one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from sqlalchemy import Connection, insert, select

from cloudmfa.config import normalise_database_url
from cloudmfa.store.db import create_engine
from cloudmfa.store.migrate import alembic_config, upgrade_to_head
from cloudmfa.store.models import users
from conftest import ALL_BACKENDS

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)


def _upgrade_to(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _user(email: str, created_at: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "email": email,
        "display_name": None,
        "password_hash": "$argon2id$not-a-real-hash",
        "roles": [],
        "locked_at": None,
        "created_at": created_at,
        "updated_at": created_at,
    }


async def test_old_spellings_are_rewritten_and_colliding_ones_left_alone(
    backend: dict[str, Any],
) -> None:
    engine = create_engine(normalise_database_url(backend["database_url"]))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # As the old code stored them: lower-cased, the domain as email-validator gave it.
    unicode_domain = _user("zoë@bücher.example", t0)
    folded_local = _user("straße@example.org", t0 + timedelta(seconds=1))
    later_twin = _user("strasse@example.org", t0 + timedelta(seconds=2))  # already normalised
    # Both need rewriting and fold into one address: the older account gets it.
    older_pair = _user("maß@bücher.example", t0 + timedelta(seconds=3))
    newer_pair = _user("mass@bücher.example", t0 + timedelta(seconds=4))
    plain = _user("ada@example.com", t0 + timedelta(seconds=5))
    rows = [unicode_domain, folded_local, later_twin, older_pair, newer_pair, plain]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0002")
            await conn.execute(insert(users), rows)

        await upgrade_to_head(engine)

        async with engine.connect() as conn:
            stored = dict((await conn.execute(select(users.c.id, users.c.email))).all())
    finally:
        await engine.dispose()
    assert stored[unicode_domain["id"]] == "zoë@xn--bcher-kva.example"
    assert stored[plain["id"]] == "ada@example.com"
    # The row already in the normalised spelling keeps it; the other one is left as it was.
    assert stored[later_twin["id"]] == "strasse@example.org"
    assert stored[folded_local["id"]] == "straße@example.org"
    assert stored[older_pair["id"]] == "mass@xn--bcher-kva.example"
    assert stored[newer_pair["id"]] == "mass@bücher.example"

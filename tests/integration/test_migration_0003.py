"""Migration 0003 keeps what existing rows hold: a TOTP factor's last accepted time step moves to
`counter` (replay protection survives the upgrade), recovery codes keep their hashes with no
lookup (and still redeem: tests/api/test_recovery_code_storage.py), and two factors of one type
cannot share a lookup key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from cloudmfa.config import normalise_database_url
from cloudmfa.store.db import create_engine
from cloudmfa.store.migrate import alembic_config
from conftest import ALL_BACKENDS

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

NOW = datetime(2026, 11, 30, tzinfo=UTC)


async def test_upgrade_keeps_counters_and_recovery_hashes(backend: dict[str, Any]) -> None:
    engine = create_engine(normalise_database_url(backend["database_url"]))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
            await conn.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, roles, created_at, updated_at) "
                    "VALUES ('u1', 'a@example.com', 'x', '[]', :now, :now)"
                ),
                {"now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO factors (id, user_id, type, status, data, last_used_step, "
                    "created_at) VALUES ('f1', 'u1', 'totp', 'active', '{}', 59872913, :now)"
                ),
                {"now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO recovery_codes (id, user_id, code_hash, created_at) "
                    "VALUES ('r1', 'u1', :hash, :now)"
                ),
                {"hash": "ab" * 32, "now": NOW},
            )
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0003"))
        async with engine.connect() as conn:
            counter = (await conn.execute(text("SELECT counter FROM factors"))).scalar_one()
            code = (await conn.execute(text("SELECT lookup, code_hash FROM recovery_codes"))).one()
        assert counter == 59872913
        assert (code.lookup, code.code_hash) == (None, "ab" * 32)

        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO factors (id, user_id, type, status, data, lookup_key, "
                    "created_at) VALUES ('f2', 'u1', 'webauthn', 'active', '{}', 'c1', :now)"
                ),
                {"now": NOW},
            )
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO factors (id, user_id, type, status, data, lookup_key, "
                        "created_at) VALUES ('f3', 'u1', 'webauthn', 'active', '{}', 'c1', :now)"
                    ),
                    {"now": NOW},
                )

        async with engine.begin() as conn:  # and back
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0002"))
            step = (await conn.execute(text("SELECT last_used_step FROM factors"))).scalars()
            assert 59872913 in list(step)
    finally:
        await engine.dispose()

"""The SQLite database, its WAL and shared-memory files, and the data directory they and the
generated key file live in are private to the service's user when the service creates them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudmfa.config import Settings
from conftest import FAST_ARGON2, PASSWORD, start_api


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default, under which files come out world-readable unless asked otherwise."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
async def test_a_new_sqlite_database_and_data_dir_are_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "state"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=str(data_dir),
        mfa_policy="optional",
        ip_rate_limit="100000/minute",
        **FAST_ARGON2,
    )
    app, api = await start_api(settings)
    async with app.router.lifespan_context(app), api.client:
        r = await api.client.post(
            "/api/v1/accounts", json={"email": api.new_email(), "password": PASSWORD}
        )
        assert r.status_code == 201, r.text
        database = data_dir / "cloudmfa.db"
        files = [database, data_dir / "cloudmfa.db-wal", data_dir / "cloudmfa.db-shm"]
        for path in files:
            assert path.exists(), path
            assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(data_dir) == 0o700, oct(mode(data_dir))
        key_file = data_dir / "secret-keys"
        assert mode(key_file) == 0o600


@pytest.mark.usefixtures("permissive_umask")
async def test_a_database_in_its_own_directory_is_owner_only_too(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    keys_dir = tmp_path / "keys"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{db_dir / 'other.db'}",
        data_dir=str(keys_dir),
        mfa_policy="optional",
        **FAST_ARGON2,
    )
    app, api = await start_api(settings)
    async with app.router.lifespan_context(app), api.client:
        assert (await api.client.get("/readyz")).status_code == 200
        assert mode(db_dir) == 0o700
        assert mode(db_dir / "other.db") == 0o600
        assert mode(keys_dir) == 0o700

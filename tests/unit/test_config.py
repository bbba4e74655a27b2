"""Settings: the defaults that decide where the state of a zero-configuration service lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudmfa.app import create_app
from cloudmfa.config import Settings


def test_without_a_database_the_sqlite_file_is_in_the_data_dir() -> None:
    assert Settings(_env_file=None).database_url == "sqlite+aiosqlite:///./var/cloudmfa.db"
    settings = Settings(_env_file=None, data_dir="/srv/cloudmfa/")
    assert settings.database_url == "sqlite+aiosqlite:////srv/cloudmfa/cloudmfa.db"


def test_a_configured_database_wins_over_the_data_dir() -> None:
    settings = Settings(_env_file=None, data_dir="/srv/x", database_url="postgresql://db/mfa")
    assert settings.database_url == "postgresql+asyncpg://db/mfa"


@pytest.mark.parametrize(
    "given",
    ["mysql://u:p@db:3306/mfa", "mysql+asyncmy://u:p@db:3306/mfa", "mariadb://u:p@db:3306/mfa"],
)
def test_a_mysql_url_takes_the_async_driver(given: str) -> None:
    settings = Settings(_env_file=None, database_url=given)
    assert settings.database_url == "mysql+asyncmy://u:p@db:3306/mfa"
    assert not settings.is_sqlite


@pytest.mark.parametrize("given", ["mongodb://db/mfa", "mysql+pymysql://db/mfa", "db/mfa"])
def test_a_database_the_service_cannot_use_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="CLOUDMFA_DATABASE_URL|unsupported database scheme"):
        Settings(_env_file=None, database_url=given)


def test_the_data_dir_from_the_environment_moves_the_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLOUDMFA_DATA_DIR", str(tmp_path))
    assert Settings(_env_file=None).database_url == f"sqlite+aiosqlite:///{tmp_path}/cloudmfa.db"


def _state_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm")))


async def test_the_service_keeps_database_and_key_file_in_the_data_dir(tmp_path: Path) -> None:
    app = create_app(Settings(_env_file=None, data_dir=str(tmp_path)))
    async with app.router.lifespan_context(app):
        pass
    assert _state_files(tmp_path) == ["cloudmfa.db", "secret-keys"]

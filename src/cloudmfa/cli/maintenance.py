"""``cloudmfa migrate``: the database schema."""

from __future__ import annotations

import argparse
from typing import Any

from cloudmfa.cli.common import load_settings, run_async
from cloudmfa.config import Settings


async def migrate_database(settings: Settings) -> str | None:
    """Upgrade the schema to the newest revision and return that revision."""
    from cloudmfa.services import Services

    svc = Services.build(settings)
    try:
        await svc.start(migrate=True)
        from cloudmfa.store.migrate import current_revision

        return await current_revision(svc.engine)
    finally:
        await svc.close()


def cmd_migrate(_args: argparse.Namespace) -> None:
    settings = load_settings()
    revision = run_async(lambda: migrate_database(settings))
    print(f"database schema is at revision {revision}")


def register(sub: Any) -> None:
    migrate = sub.add_parser(
        "migrate", help="create or upgrade the database schema", description="Apply the migrations."
    )
    migrate.set_defaults(func=cmd_migrate)

"""``cloudmfa migrate`` and ``cloudmfa prune``: the database's schema and housekeeping."""

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


async def prune_database(settings: Settings) -> str:
    """Delete every row past its use now, and say what went."""
    from cloudmfa.flows.maintenance import prune, retention_for
    from cloudmfa.services import Services

    svc = Services.build(settings)
    try:
        await svc.start()
        report = await prune(svc.engine, retention_for(svc), svc.clock.now())
        return report.summary()
    finally:
        await svc.close()


def cmd_prune(_args: argparse.Namespace) -> None:
    settings = load_settings()
    summary = run_async(lambda: prune_database(settings))
    print(f"removed {summary}")


def register(sub: Any) -> None:
    migrate = sub.add_parser(
        "migrate", help="create or upgrade the database schema", description="Apply the migrations."
    )
    migrate.set_defaults(func=cmd_migrate)

    prune = sub.add_parser(
        "prune",
        help="delete rows past their use",
        description="Delete used refresh tokens of ended sessions, sessions ended longer ago "
        "than an access token lives, expired remembered devices, factors never activated "
        "within CLOUDMFA_PENDING_FACTOR_MAX_HOURS and, when CLOUDMFA_AUDIT_RETENTION_DAYS is "
        "set, older audit events. Commits in batches; `serve` also does this every "
        "CLOUDMFA_PRUNE_INTERVAL_S.",
    )
    prune.set_defaults(func=cmd_prune)

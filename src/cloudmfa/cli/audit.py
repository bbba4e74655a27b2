"""``cloudmfa audit verify`` and ``cloudmfa audit export``: the audit trail's hash chain."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from cloudmfa.cli.common import CliError, load_settings, run_async
from cloudmfa.config import Settings


def _engine(settings: Settings) -> Any:
    from cloudmfa.store.db import create_engine

    # The database alone: no key ring, no Redis, no signing key is needed to read the trail.
    return create_engine(
        settings.database_url, pool_size=1, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )


async def verify_trail(settings: Settings) -> Any:
    from cloudmfa.flows.audit_chain import verify

    engine = _engine(settings)
    try:
        return await verify(engine)
    finally:
        await engine.dispose()


def cmd_verify(_args: argparse.Namespace) -> None:
    verdict = run_async(lambda: verify_trail(load_settings()))
    if not verdict.whole:
        print(f"cloudmfa: audit trail broken: {verdict.problem}", file=sys.stderr)
        sys.exit(1)
    print(
        f"audit trail whole: {verdict.events} event(s) checked; head at position "
        f"{verdict.head_seq}, hash {verdict.head_hash}"
    )


async def export_trail(settings: Settings, since: datetime | None) -> int:
    from cloudmfa.flows.audit_chain import export

    engine = _engine(settings)
    written = 0
    try:
        async for event in export(engine, since=since):
            sys.stdout.write(json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n")
            written += 1
    finally:
        await engine.dispose()
    return written


def _timestamp(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time (2026-12-01 or 2026-12-01T08:00:00Z)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def cmd_export(args: argparse.Namespace) -> None:
    settings = load_settings()
    try:
        run_async(lambda: export_trail(settings, args.since))
    except BrokenPipeError:  # `… | head`: the reader has what it wanted
        raise CliError("output closed before the export ended") from None
    sys.stdout.flush()


def register(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="verify or export the audit trail",
        description='The audit trail is chained by SHA-256 (docs/operations.md, "The audit '
        'trail"). Both commands first chain the events not yet chained.',
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="check the hash chain",
        description="Exit 0 when the chain is whole, 1 naming the first event changed or removed.",
    )
    verify.set_defaults(func=cmd_verify)
    export = commands.add_parser(
        "export",
        help="write the events as JSON lines",
        description="One JSON object per event, in chain order, with its chain_seq, prev_hash "
        "and chain_hash.",
    )
    export.add_argument(
        "--since",
        type=_timestamp,
        metavar="T",
        help="only events written at or after T (ISO 8601; without a zone, UTC)",
    )
    export.set_defaults(func=cmd_export)

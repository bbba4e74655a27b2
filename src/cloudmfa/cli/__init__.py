"""The ``cloudmfa`` command: serve, worker, migrate, prune, create-admin, rotate-signing-key,
rotate-secret-key, audit. Each command lives in the module of its purpose and adds its own
subparser; this module only assembles them."""

from __future__ import annotations

import argparse
import sys

from cloudmfa import __version__
from cloudmfa.cli import accounts, audit, keys, maintenance, serve, worker
from cloudmfa.cli.common import CliError, fail


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudmfa",
        description="Multi-factor authentication service. Configuration comes from CLOUDMFA_* "
        "environment variables and a .env file (docs/operations.md lists them).",
    )
    parser.add_argument("--version", action="version", version=f"cloudmfa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(sub)
    worker.register(sub)
    maintenance.register(sub)
    accounts.register(sub)
    keys.register(sub)
    audit.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CliError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)

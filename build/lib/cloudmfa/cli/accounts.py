"""``cloudmfa create-admin``: an administrator from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cloudmfa.cli.common import CliError, load_settings, run_async


def cmd_create_admin(args: argparse.Namespace) -> None:
    if not args.password_stdin:
        raise CliError("pass the password on standard input with --password-stdin")
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    password = password[:-1] if password.endswith("\r") else password
    settings = load_settings()

    async def create() -> Any:
        from cloudmfa.flows.accounts import create_admin
        from cloudmfa.services import Services

        svc = Services.build(settings)
        try:
            await svc.start()
            return await create_admin(svc, email=args.email, password=password)
        finally:
            await svc.close()

    if not password and not args.email:
        raise CliError("an email and a password are needed")
    result = run_async(create)
    if result.created:
        print(f"created admin {result.user.email} ({result.user.id})")
    else:
        print(f"{result.user.email} ({result.user.id}) now has the admin role")


def register(sub: Any) -> None:
    admin = sub.add_parser(
        "create-admin",
        help="create an administrator, or give an existing account the admin role",
        description="Create an account with the admin role, or add the role to an existing "
        "account. The password is one line read from standard input.",
    )
    admin.add_argument("email", metavar="EMAIL")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    admin.set_defaults(func=cmd_create_admin)

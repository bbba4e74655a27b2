"""The ``cloudmfa`` command: serve, migrate, create-admin, rotate-signing-key.

Every failure a person can cause (a bad database URL, a port in use, an unreadable TLS key, a
weak password) ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import errno
import os
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

from cloudmfa import __version__
from cloudmfa.config import Settings
from cloudmfa.errors import CloudMFAError

T = TypeVar("T")


class CliError(Exception):
    """A problem to report in one line, then exit 1."""


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"cloudmfa: error: {message}", file=sys.stderr)
    sys.exit(code)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "CLOUDMFA_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg']}")
        raise CliError("invalid configuration: " + "; ".join(problems)) from None


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning database and policy failures into one-line errors."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except CloudMFAError as exc:
        raise CliError(exc.detail) from None
    except (OSError, ConnectionError) as exc:
        raise CliError(f"cannot reach the database: {exc}") from None
    except Exception as exc:  # driver errors have no common base class worth naming
        name = type(exc).__name__
        if "sqlalchemy" in type(exc).__module__ or "asyncpg" in type(exc).__module__:
            message = str(exc).splitlines()[0] if str(exc) else name
            raise CliError(f"database error ({name}): {message}") from None
        raise


# --- migrate -----------------------------------------------------------------------------


async def _migrate(settings: Settings) -> str | None:
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
    revision = run_async(lambda: _migrate(settings))
    print(f"database schema is at revision {revision}")


# --- create-admin ------------------------------------------------------------------------


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


# --- rotate-signing-key ------------------------------------------------------------------


async def _rotate(settings: Settings) -> str:
    from datetime import timedelta

    from cloudmfa.security.tokens import PUBLISH_LEAD_S, generate_signing_key
    from cloudmfa.services import Services
    from cloudmfa.store import keys as key_repo

    svc = Services.build(settings)
    try:
        await svc.start()
        now = svc.clock.now()
        key = generate_signing_key(now)
        async with svc.engine.begin() as conn:
            # The current key keeps signing while the new one is published but not yet used.
            await key_repo.retire_active_keys(conn, now + timedelta(seconds=PUBLISH_LEAD_S))
            await key_repo.insert_key(conn, key, svc.secretbox)
        return key.kid
    finally:
        await svc.close()


def cmd_rotate_signing_key(_args: argparse.Namespace) -> None:
    settings = load_settings()
    kid = run_async(lambda: _rotate(settings))
    from cloudmfa.security.tokens import PUBLISH_LEAD_S

    print(
        f"new signing key {kid} is published in the JWKS now and signs from {PUBLISH_LEAD_S} s "
        "on (so relying parties' cached JWKS know it first); the previous key signs until then "
        f"and stays in the JWKS until its tokens expire ({settings.access_token_ttl_s} s later)"
    )


# --- rotate-secret-key -------------------------------------------------------------------


def cmd_rotate_secret_key(args: argparse.Namespace) -> None:
    from cloudmfa.security.secretbox import (
        SecretKeyError,
        format_key,
        load_key_ring,
        new_key,
        write_key_file,
    )

    if args.generate_key:
        print(format_key(new_key([])))
        return
    settings = load_settings()
    try:
        keys, path = load_key_ring(settings.secret_keys, settings.data_dir)
    except SecretKeyError as exc:
        raise CliError(f"CLOUDMFA_SECRET_KEYS: {exc}") from None

    async def rotate() -> None:
        from cloudmfa.flows.maintenance import pending_reencryption, reencrypt_secrets
        from cloudmfa.services import Services

        svc = Services.build(settings)
        try:
            await svc.start()
            pending = await pending_reencryption(svc)
            if pending:
                print(
                    f"resuming: {pending} secret(s) are not yet under key "
                    f"{svc.secretbox.current_id}"
                )
            elif path is not None:
                fresh = new_key(keys)
                write_key_file(path, [fresh, *keys])
                svc.secretbox.use_keys([fresh, *keys])
                print(f"added key {fresh.id} to {path}; it encrypts from now on")
            else:
                print(
                    f"every secret is already under key {svc.secretbox.current_id}, the first of "
                    "CLOUDMFA_SECRET_KEYS. To rotate: generate a key with "
                    "`cloudmfa rotate-secret-key --generate-key`, put it first in "
                    "CLOUDMFA_SECRET_KEYS on every replica, then run this command again."
                )
                return

            def progress(report: Any) -> None:
                print(
                    f"  re-encrypted {report.reencrypted}, "
                    f"already current {report.already_current}",
                    flush=True,
                )

            report = await reencrypt_secrets(svc, progress=progress)
            print(
                f"done: {report.reencrypted} secret(s) re-encrypted under key "
                f"{svc.secretbox.current_id}; older keys may be removed once every replica runs "
                "with the new ring"
            )
        finally:
            await svc.close()

    run_async(rotate)


# --- serve -------------------------------------------------------------------------------


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {host} is already in use") from None
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _check_tls(cert: str | None, key: str | None) -> None:
    if bool(cert) != bool(key):
        raise CliError("--tls-cert and --tls-key go together")
    if not cert or not key:
        return
    for label, path in (("certificate", cert), ("key", key)):
        if not os.access(path, os.R_OK):
            raise CliError(f"cannot read the TLS {label} file {path}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise CliError(f"the TLS certificate and key do not load: {exc}") from None


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["cloudmfa"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = load_settings()
    workers = args.workers if args.workers is not None else (1 if settings.is_sqlite else 2)
    if workers < 1:
        raise CliError("--workers must be at least 1")
    if workers > 1 and not settings.redis_url:
        raise CliError(
            "--workers above 1 needs CLOUDMFA_REDIS_URL: the in-process store cannot share "
            "revocations and rate limits between processes"
        )
    _check_tls(args.tls_cert, args.tls_key)
    _check_port_free(args.host, args.port)
    _check_secret_keys(settings)
    if settings.auto_migrate:
        revision = run_async(lambda: _migrate(settings))
        print(f"cloudmfa: database schema at revision {revision}", file=sys.stderr)
        # Done once here, so the workers do not all race to do it again.
        os.environ["CLOUDMFA_AUTO_MIGRATE"] = "false"
    else:
        run_async(lambda: _check_database(settings))
    if settings.is_sqlite and workers > 1:
        print(
            "cloudmfa: warning: several workers writing one SQLite file stall each other; "
            "use PostgreSQL for more than one worker",
            file=sys.stderr,
        )
    if workers > 1 and settings.hash_threads is None:
        # Each worker hashes on its share of the cores (measured in bench/: more hashes in
        # flight than cores is slower, argon2 being memory-hard).
        os.environ["CLOUDMFA_HASH_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    trusted = settings.trusted_proxies.strip()
    metrics_dir = _metrics_dir_for(workers)
    try:
        uvicorn.run(
            "cloudmfa.app:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            ssl_certfile=args.tls_cert,
            ssl_keyfile=args.tls_key,
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
            server_header=False,
            log_config=_log_config(settings.log_level),
            log_level=settings.log_level,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir_for(workers: int) -> str | None:
    """With several workers, a fresh directory where each records its metrics, so that /metrics
    counts every worker's requests (an operator's own PROMETHEUS_MULTIPROC_DIR is kept)."""
    from cloudmfa.api.edge import MULTIPROCESS_DIR_VARIABLE

    if workers < 2 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        return None
    path = tempfile.mkdtemp(prefix="cloudmfa-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = path  # the workers inherit it
    return path


def _check_secret_keys(settings: Settings) -> None:
    """Load (or, with zero configuration, generate) the secret key ring once, here, before
    the workers start: they must not race to create the key file."""
    from cloudmfa.security.secretbox import SecretKeyError, load_key_ring

    try:
        load_key_ring(settings.secret_keys, settings.data_dir)
    except SecretKeyError as exc:
        raise CliError(f"CLOUDMFA_SECRET_KEYS: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot create the secret key file in {settings.data_dir}: {exc}") from None


async def _check_database(settings: Settings) -> None:
    from sqlalchemy import text

    from cloudmfa.store.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


# --- wiring ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudmfa",
        description="Multi-factor authentication service. Configuration comes from CLOUDMFA_* "
        "environment variables and a .env file (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"cloudmfa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Creates or migrates the schema first unless "
        "CLOUDMFA_AUTO_MIGRATE=false.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default 1 on SQLite, 2 otherwise; above 1 needs Redis)",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve HTTPS")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser(
        "migrate", help="create or upgrade the database schema", description="Apply the migrations."
    )
    migrate.set_defaults(func=cmd_migrate)

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

    rotate = sub.add_parser(
        "rotate-signing-key",
        help="start signing tokens with a new key",
        description="Generate a new token signing key and retire the current one; the retired "
        "key keeps verifying (and stays in the JWKS) until its tokens expire.",
    )
    rotate.set_defaults(func=cmd_rotate_signing_key)

    secret = sub.add_parser(
        "rotate-secret-key",
        help="re-encrypt the stored TOTP seeds and signing keys under a new key",
        description="With the generated key file (no CLOUDMFA_SECRET_KEYS): add a new key to "
        "it and re-encrypt every stored secret (TOTP seeds, token signing keys). With "
        "CLOUDMFA_SECRET_KEYS: re-encrypt every secret under its first key. Commits in "
        "batches; if interrupted, run it again to resume.",
    )
    secret.add_argument(
        "--generate-key",
        action="store_true",
        help="only print a new key (ID:BASE64) to put first in CLOUDMFA_SECRET_KEYS",
    )
    secret.set_defaults(func=cmd_rotate_secret_key)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CliError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

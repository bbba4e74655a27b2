"""``cloudmfa serve``: check what a person can get wrong, migrate once, then start uvicorn."""

from __future__ import annotations

import argparse
import copy
import errno
import os
import shutil
import socket
import ssl
import sys
import tempfile
from typing import Any

from cloudmfa.cli.common import CliError, load_settings, run_async
from cloudmfa.cli.maintenance import migrate_database
from cloudmfa.config import Settings


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
        revision = run_async(lambda: migrate_database(settings))
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


def register(sub: Any) -> None:
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

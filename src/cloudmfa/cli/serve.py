"""``cloudmfa serve``: check what a person can get wrong, migrate once, then start uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import shutil
import socket
import ssl
import tempfile
from typing import Any

from cloudmfa.cli.common import CliError, load_settings, run_async
from cloudmfa.cli.maintenance import migrate_database
from cloudmfa.config import Settings
from cloudmfa.logs import configure as configure_logging
from cloudmfa.logs import logging_config

log = logging.getLogger("cloudmfa.cli")


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


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    _one_malloc_arena()  # before anything starts a thread
    settings = load_settings()
    # The lines written before uvicorn starts take the same form as every later one.
    configure_logging(settings.log_level, settings.log_format)
    workers = args.workers if args.workers is not None else (1 if settings.is_sqlite else 2)
    if workers < 1:
        raise CliError("--workers must be at least 1")
    if workers > 1 and not settings.redis_url:
        raise CliError(
            "--workers above 1 needs CLOUDMFA_REDIS_URL: the in-process store cannot share "
            "revocations and rate limits between processes"
        )
    _check_delivery(settings)
    _check_tls(args.tls_cert, args.tls_key)
    _check_port_free(args.host, args.port)
    if settings.redis_url:
        _check_redis(settings.redis_url)
    _check_secret_keys(settings)
    _default_public_url(settings, port=args.port, tls=bool(args.tls_cert))
    if settings.auto_migrate:
        revision = run_async(lambda: migrate_database(settings))
        log.info("database schema at revision %s", revision)
        # Done once here, so the workers do not all race to do it again.
        os.environ["CLOUDMFA_AUTO_MIGRATE"] = "false"
    else:
        run_async(lambda: _check_database(settings))
    if settings.is_sqlite and workers > 1:
        log.warning(
            "several workers writing one SQLite file stall each other; "
            "use PostgreSQL for more than one worker"
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
            ws="none",  # no WebSocket routes: not loading uvicorn's saves ~1 MiB a worker
            log_config=logging_config(settings.log_level, settings.log_format),
            log_level=settings.log_level,
            access_log=False,  # the edge middleware logs each request (cloudmfa.access)
            # SIGTERM: stop accepting, let requests in flight finish for this long, then stop.
            timeout_graceful_shutdown=settings.shutdown_grace_s,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_delivery(settings: Settings) -> None:
    """The providers (in-process delivery) or the queue (worker mode) must be usable."""
    from cloudmfa.delivery.providers import build_providers
    from cloudmfa.delivery.worker import QueueUnusable, open_queue

    try:
        if settings.delivery == "worker":
            open_queue(settings)
        else:
            build_providers(settings)
    except (QueueUnusable, ValueError) as exc:
        raise CliError(str(exc)) from None


def _default_public_url(settings: Settings, *, port: int, tls: bool) -> None:
    """Unset, the public URL follows the port served on (``make run PORT=8080``), so that the
    tokens' issuer and the origin passkeys are bound to name the address actually used."""
    if "public_url" in settings.model_fields_set:
        return
    scheme = "https" if tls else "http"
    os.environ["CLOUDMFA_PUBLIC_URL"] = f"{scheme}://localhost:{port}"  # the workers read it


# Argon2id's working buffer (19 MiB by default) is one malloc per hash: a busy worker reuses it,
# and the hashing pool hands it back once idle (security/passwords.py). That hand-back reaches
# only glibc's main arena, so serve's processes keep to it: the workers through the tunable, read
# as they start, this process (which serves itself with one worker) through mallopt. An
# operator's own GLIBC_TUNABLES win.
ONE_MALLOC_ARENA = "glibc.malloc.arena_max=1"


def _one_malloc_arena() -> None:
    from cloudmfa.security.passwords import one_malloc_arena

    if os.environ.get("GLIBC_TUNABLES") is not None:
        return
    if one_malloc_arena():
        os.environ["GLIBC_TUNABLES"] = ONE_MALLOC_ARENA


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
    from cloudmfa.security.key_sources import load_configured_ring, source_name
    from cloudmfa.security.secretbox import SecretKeyError

    try:
        load_configured_ring(settings)
    except SecretKeyError as exc:
        raise CliError(f"{source_name(settings)}: {exc}") from None
    from datetime import UTC, datetime

    from cloudmfa.security.tokens import SigningKeyError
    from cloudmfa.services import configured_signing_key

    try:
        configured_signing_key(settings, datetime.now(UTC))
    except SigningKeyError as exc:
        raise CliError(str(exc)) from None
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


def _check_redis(url: str) -> None:
    """Ask the configured Redis once, before the workers start: a URL the service cannot use
    (nothing listening, a Sentinel that knows no such service, a Cluster URL for a lone
    server, a wrong password, TLS to a server without it) ends here in one line, rather than in
    workers that answer every request 503."""
    import redis.exceptions

    from cloudmfa.store.ephemeral import RedisStore

    async def ping() -> None:
        store = RedisStore(url)
        try:
            await store.ping()
        finally:
            await store.close()

    try:
        asyncio.run(ping())
    except (
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,
        ConnectionError,
        OSError,
    ) as exc:
        raise CliError(f"CLOUDMFA_REDIS_URL: cannot use this Redis: {_redis_reason(exc)}") from None


def _redis_reason(exc: BaseException) -> str:
    """The first line of redis-py's message (host and port, never the password)."""
    from redis.asyncio.sentinel import MasterNotFoundError

    cause = exc.__cause__ or exc
    if isinstance(cause, MasterNotFoundError):
        # Its message goes on to print the whole client.
        return "no Sentinel answers with a master for that service name"
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return reason if len(reason) <= 200 else reason[:200] + "…"


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

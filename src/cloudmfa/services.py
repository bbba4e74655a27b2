"""Everything a flow needs, built once from the settings and passed down.

Framework-free: the CLI, the HTTP app and the tests all build the same object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudmfa import metrics
from cloudmfa.clock import Clock, SystemClock
from cloudmfa.config import Settings
from cloudmfa.delivery.base import Outbox
from cloudmfa.delivery.outbox import DatabaseOutbox
from cloudmfa.factors.base import FactorDeps
from cloudmfa.factors.registry import FactorFactory, FactorTypes
from cloudmfa.security.key_sources import open_configured_secretbox
from cloudmfa.security.password_policy import PasswordPolicy
from cloudmfa.security.passwords import PasswordHashing
from cloudmfa.security.secretbox import SecretBox
from cloudmfa.security.throttle import AccountThrottle, IpRateLimiter
from cloudmfa.security.tokens import (
    PUBLISH_LEAD_S,
    AccessTokens,
    KeyRing,
    SigningKey,
    SigningKeyError,
    generate_signing_key,
    signing_key_from_pem,
)
from cloudmfa.store import keys as key_repo
from cloudmfa.store import sessions as session_repo
from cloudmfa.store.db import create_engine, pool_capacity, reader_for, serialised
from cloudmfa.store.ephemeral import EphemeralStore, MemoryStore, RedisStore, create_store
from cloudmfa.store.login_attempts import LoginAttempts
from cloudmfa.store.redis_url import MAX_CONNECTIONS as MAX_REDIS_CONNECTIONS
from cloudmfa.store.sign_in import SignInStore

log = logging.getLogger("cloudmfa")


@dataclass
class Services:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    reader: AsyncEngine  # for reads only, without transactions (store/db.py, reader_for)
    sign_ins: SignInStore  # the second step of login, as one atomic write
    ephemeral: EphemeralStore  # short-lived shared state: Redis, or in-process
    attempts: LoginAttempts  # what an mfa_token stands for
    hashing: PasswordHashing
    policy: PasswordPolicy
    tokens: AccessTokens
    secretbox: SecretBox
    factor_types: FactorTypes
    outbox: Outbox  # where messages to users go
    throttle: AccountThrottle
    ip_limiter: IpRateLimiter
    db_burst: bool = True  # whether the database pool borrows beyond its size (Services.build)
    # Whether start() counted this instance's pools into the capacity gauges, so that close()
    # takes back exactly what was counted (services closed without a start count nothing).
    _capacity_counted: bool = field(default=False, init=False, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        factories: dict[str, FactorFactory] | None = None,
        outbox: Outbox | None = None,
        db_burst: bool = True,
    ) -> Services:
        """``factories`` replaces the registry's factor types and ``outbox`` the configured
        delivery (tests use both). ``db_burst``: the database pool may borrow connections
        beyond CLOUDMFA_DB_POOL_SIZE in a burst (store/db.py, create_engine)."""
        clock = clock or SystemClock()
        ring = KeyRing(clock=clock, access_ttl_s=settings.access_token_ttl_s)
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            burst=db_burst,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        )
        store = create_store(settings.redis_url, prefix=settings.redis_key_prefix, clock=clock)
        secretbox = open_configured_secretbox(settings)
        reader = reader_for(engine, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        hashing = PasswordHashing(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            threads=settings.hash_threads,
        )
        factor_deps = FactorDeps(
            clock=clock,
            secretbox=secretbox,
            hashing=hashing,
            reader=reader,
            issuer=settings.issuer,
        )
        throttle = AccountThrottle(
            store,
            max_failures=settings.login_max_failures,
            window_s=settings.login_failure_window_s,
        )
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            reader=reader,
            sign_ins=SignInStore(engine),
            ephemeral=store,
            attempts=LoginAttempts(store, throttle, ttl_s=settings.mfa_token_ttl_s),
            hashing=hashing,
            policy=PasswordPolicy(
                min_length=settings.effective_password_min_length,
                max_length=settings.password_max_length,
                issuer=settings.issuer,
            ),
            tokens=AccessTokens(
                ring,
                clock=clock,
                issuer=settings.jwt_issuer,
                audience=settings.token_audience,
                ttl_s=settings.access_token_ttl_s,
            ),
            secretbox=secretbox,
            factor_types=FactorTypes(
                settings.enabled_factors, settings, factor_deps, factories=factories
            ),
            outbox=outbox or DatabaseOutbox(engine, secretbox, clock),
            throttle=throttle,
            db_burst=db_burst,
            ip_limiter=IpRateLimiter(
                settings.ip_rate_limit,
                redis_url=settings.redis_url,
                prefix=settings.redis_key_prefix,
                redis=store.redis if isinstance(store, RedisStore) else None,
            ),
        )

    async def start(self, *, migrate: bool | None = None) -> None:
        if self.settings.auto_migrate if migrate is None else migrate:
            # Imported here: Alembic costs every worker ~11 MiB, and `serve` migrates once
            # before its workers start (they run with CLOUDMFA_AUTO_MIGRATE=false).
            from cloudmfa.store.migrate import upgrade_to_head

            await upgrade_to_head(self.engine)
        await self.ensure_signing_key()
        await self.reload_keys()
        if isinstance(self.ephemeral, MemoryStore):
            await self._restore_revocations()
        if not self._capacity_counted:
            metrics.capacity_started(**self._capacity())
            self._capacity_counted = True

    async def close(self) -> None:
        if self._capacity_counted:
            metrics.capacity_stopped(**self._capacity())
            self._capacity_counted = False
        await self.ephemeral.close()
        if self.reader.pool is not self.engine.pool:  # SQLite's readers have a pool of their own
            await self.reader.dispose()
        await self.engine.dispose()

    def _capacity(self) -> dict[str, int]:
        redis_url = self.settings.redis_url or ""
        counted = redis_url and "cluster" not in redis_url.partition("://")[0]
        return {
            "db": pool_capacity(
                self.settings.database_url, self.settings.db_pool_size, burst=self.db_burst
            ),
            "redis": MAX_REDIS_CONNECTIONS if counted else 0,
            "hash_threads": self.hashing.threads,
        }

    async def ensure_signing_key(self) -> None:
        """The first start of a deployment generates its signing key, once for all replicas;
        any start seals a private key that an earlier release stored as bare PEM. A key the
        operator configures is imported (sealed) at the first start that meets it."""
        configured = configured_signing_key(self.settings, self.clock.now())
        async with serialised(self.engine, "signing-key") as conn:
            if configured is not None:
                await import_signing_key(conn, configured, self.secretbox)
            if not await key_repo.has_active_key(conn):
                fresh = generate_signing_key(self.clock.now())
                await key_repo.insert_key(conn, fresh, self.secretbox)
                log.info("generated a new token signing key")
            for kid, stored in await key_repo.stored_private_keys(conn):
                if not key_repo.is_sealed(stored):  # written before keys were sealed
                    sealed = key_repo.seal(self.secretbox, kid, stored)
                    await key_repo.replace_private_key(conn, kid, stored, sealed)
                    log.info("sealed the private half of signing key %s", kid)

    async def reload_keys(self) -> None:
        async with self.reader.connect() as conn:
            self.tokens.ring.load(await key_repo.load_keys(conn, self.secretbox))

    async def _restore_revocations(self) -> None:
        # An in-process store forgets revocations on restart; the access tokens of sessions
        # revoked within their lifetime must stay refused.
        since = self.clock.now() - timedelta(seconds=self.settings.access_token_ttl_s + 60)
        async with self.reader.connect() as conn:
            for sid in await session_repo.recently_revoked(conn, since):
                await self.ephemeral.set(revocation_key(sid), "1", self.revocation_ttl_s)

    @property
    def revocation_ttl_s(self) -> int:
        return self.settings.access_token_ttl_s + 60

    async def check_database(self) -> None:
        async with self.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))


def configured_signing_key(settings: Settings, now: datetime) -> SigningKey | None:
    """The signing key from CLOUDMFA_SIGNING_KEY or CLOUDMFA_SIGNING_KEY_FILE, if one is set.
    Raises SigningKeyError (naming the variable) for one that cannot be used."""
    if settings.signing_key is not None:
        source, pem = "CLOUDMFA_SIGNING_KEY", settings.signing_key.get_secret_value()
    elif settings.signing_key_file:
        source = "CLOUDMFA_SIGNING_KEY_FILE"
        try:
            pem = Path(settings.signing_key_file).read_text()
        except OSError as exc:
            raise SigningKeyError(f"{source}: cannot read it: {exc.strerror}") from None
    else:
        return None
    try:
        return signing_key_from_pem(pem, now)
    except SigningKeyError as exc:
        raise SigningKeyError(f"{source}: {exc}") from None


async def import_signing_key(conn: AsyncConnection, key: SigningKey, box: SecretBox) -> None:
    """Store a configured key (sealed) unless it is there already. Like `cloudmfa
    rotate-signing-key`, it is published at once and signs only PUBLISH_LEAD_S later, the
    current key signing until then; the very first key signs at once."""
    if await key_repo.has_key(conn, key.kid):
        return
    await key_repo.retire_active_keys(conn, key.created_at + timedelta(seconds=PUBLISH_LEAD_S))
    await key_repo.insert_key(conn, key, box)
    log.info("imported the configured token signing key %s", key.kid)


def revocation_key(session_id: str) -> str:
    return f"revoked:{session_id}"

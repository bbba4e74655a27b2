"""Everything a flow needs, built once from the settings and passed down.

Framework-free: the CLI, the HTTP app and the tests all build the same object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.clock import Clock, SystemClock
from cloudmfa.config import Settings
from cloudmfa.delivery.base import Outbox
from cloudmfa.delivery.console import ConsoleOutbox
from cloudmfa.factors.base import FactorDeps
from cloudmfa.factors.registry import FactorFactory, FactorTypes
from cloudmfa.security.password_policy import PasswordPolicy
from cloudmfa.security.passwords import PasswordHashing
from cloudmfa.security.secretbox import SecretBox, open_secretbox
from cloudmfa.security.throttle import AccountThrottle, IpRateLimiter
from cloudmfa.security.tokens import AccessTokens, KeyRing, generate_signing_key
from cloudmfa.store import keys as key_repo
from cloudmfa.store import sessions as session_repo
from cloudmfa.store.db import create_engine, read_only
from cloudmfa.store.ephemeral import EphemeralStore, MemoryStore, RedisStore, create_store
from cloudmfa.store.login_attempts import LoginAttempts
from cloudmfa.store.sign_in import SignInStore

log = logging.getLogger("cloudmfa")


@dataclass
class Services:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    reader: AsyncEngine  # the same pool, without transactions: for reads only
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

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        factories: dict[str, FactorFactory] | None = None,
        outbox: Outbox | None = None,
    ) -> Services:
        """``factories`` replaces the registry's factor types and ``outbox`` the configured
        delivery (tests use both)."""
        clock = clock or SystemClock()
        ring = KeyRing(clock=clock, access_ttl_s=settings.access_token_ttl_s)
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        )
        store = create_store(settings.redis_url, prefix=settings.redis_key_prefix, clock=clock)
        secretbox = open_secretbox(settings.secret_keys, settings.data_dir)
        reader = read_only(engine)
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
            outbox=outbox or ConsoleOutbox(),
            throttle=throttle,
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

    async def close(self) -> None:
        await self.ephemeral.close()
        await self.engine.dispose()

    async def ensure_signing_key(self) -> None:
        """The first start of a deployment generates its signing key, once for all replicas;
        any start seals a private key that an earlier release stored as bare PEM."""
        async with self.engine.begin() as conn:
            if self.settings.is_sqlite is False:
                await conn.execute(text("SELECT pg_advisory_xact_lock(7355608)"))
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


def revocation_key(session_id: str) -> str:
    return f"revoked:{session_id}"

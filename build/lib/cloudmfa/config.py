"""Typed settings, built once at start-up from ``CLOUDMFA_*`` variables and a ``.env`` file.

Nothing below reads the environment on its own: the settings object is passed down
(``create_app(settings)``), so tests build one with the values they need.
"""

from __future__ import annotations

import posixpath
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = "./var"
SQLITE_FILE_NAME = "cloudmfa.db"
# Every factor type API.md names; CLOUDMFA_ENABLED_FACTORS may list only these.
ALL_FACTOR_TYPES = ("totp", "webauthn", "sms", "email", "recovery")


def built_factor_types() -> tuple[str, ...]:
    """What this release builds, the default of CLOUDMFA_ENABLED_FACTORS: the registry's own
    list, so that a new type is one line there. A type enabled but not built stops the service
    at start with a message saying so."""
    from cloudmfa.factors.registry import FACTORIES  # late: the registry imports this module

    return tuple(FACTORIES)


def sqlite_url_in(data_dir: str) -> str:
    """The database of a service given no CLOUDMFA_DATABASE_URL: a SQLite file in its data dir."""
    return f"sqlite+aiosqlite:///{posixpath.join(data_dir, SQLITE_FILE_NAME)}"


class MfaPolicy(StrEnum):
    REQUIRED = "required"
    OPTIONAL = "optional"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOUDMFA_", env_file=".env", extra="ignore", frozen=True
    )

    # Storage
    database_url: str = sqlite_url_in(DEFAULT_DATA_DIR)
    redis_url: str | None = None
    redis_key_prefix: str = "cloudmfa:"
    auto_migrate: bool = True
    db_pool_size: int = Field(default=20, ge=1, le=500)  # connections per worker process
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)  # wait for the lock
    data_dir: str = DEFAULT_DATA_DIR  # the key file and, by default, the SQLite database

    # Identity of this deployment
    public_url: str = "http://localhost:8000"
    token_issuer: str | None = None  # the JWT `iss`; defaults to the public URL
    token_audience: str = "cloudmfa"  # noqa: S105 (the JWT aud, not a secret)
    issuer: str = "cloudmfa"  # the name authenticator apps show

    # Accounts and passwords
    signup_enabled: bool = True
    mfa_policy: MfaPolicy = MfaPolicy.REQUIRED
    enabled_factors: Annotated[tuple[str, ...], NoDecode] = Field(
        default_factory=built_factor_types
    )
    mfa_grace_days: int = Field(default=0, ge=0)
    password_min_length: int | None = Field(default=None, ge=8, le=128)
    password_max_length: int = Field(default=128, ge=16, le=1024)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19456, ge=8192)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashes computed at once per process; unset: the cores, shared out among `serve` workers.
    hash_threads: int | None = Field(default=None, ge=1, le=256)

    # Second factors
    secret_keys: str | None = None  # "id:base64key,..." the first encrypts; unset: ./var key file
    totp_algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1"
    totp_digits: int = Field(default=6, ge=6, le=8)
    totp_period: int = Field(default=30, ge=15, le=120)
    mfa_token_ttl_s: int = Field(default=300, ge=30, le=3600)
    mfa_max_attempts: int = Field(default=5, ge=1, le=20)
    mfa_max_sends: int = Field(default=5, ge=1, le=20)  # codes sent per mfa_token
    remember_device_days: int = Field(default=30, ge=0, le=400)

    # Throttling
    login_max_failures: int = Field(default=10, ge=1, le=100)
    login_failure_window_s: int = Field(default=900, ge=1)
    ip_rate_limit: str = "60/minute"
    otp_resend_cooldown_s: int = Field(default=30, ge=0)

    # Tokens and sessions
    access_token_ttl_s: int = Field(default=600, ge=30, le=3600)
    session_max_hours: float = Field(default=24, gt=0)
    session_idle_minutes: float = Field(default=60, gt=0)
    reauth_window_s: int = Field(default=600, ge=30)

    # Pruning rows past their use (flows/maintenance.py)
    prune_interval_s: int = Field(default=3600, ge=0)  # in the background of serve; 0: off
    pending_factor_max_hours: int = Field(default=24, ge=1)  # never activated: then deleted
    audit_retention_days: int = Field(default=0, ge=0)  # 0: audit events are kept forever

    # The HTTP edge
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    trusted_proxies: str = ""  # comma-separated addresses whose X-Forwarded-For is believed
    log_level: str = "info"

    @field_validator("enabled_factors", mode="before")
    @classmethod
    def _split_factors(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("enabled_factors")
    @classmethod
    def _known_factors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(ALL_FACTOR_TYPES))
        if unknown:
            raise ValueError(
                f"unknown factor type(s) {', '.join(unknown)}; "
                f"choose from {', '.join(ALL_FACTOR_TYPES)}"
            )
        return value

    @field_validator("ip_rate_limit")
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("must look like 60/minute or 10 per second") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _usable_redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty variable means the in-process store, as unset does
        from cloudmfa.store.redis_url import parse_redis_url

        parse_redis_url(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _database_in_data_dir(cls, values: Any) -> Any:
        """With no database configured, the SQLite file lives in the data directory, beside the
        key file, so that setting CLOUDMFA_DATA_DIR alone moves all the state."""
        if isinstance(values, dict) and not values.get("database_url"):
            data_dir = str(values.get("data_dir") or DEFAULT_DATA_DIR)
            values = {**values, "database_url": sqlite_url_in(data_dir)}
        return values

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def effective_password_min_length(self) -> int:
        """API.md: 12 characters, or 15 when the password may be the only factor."""
        if self.password_min_length is not None:
            return self.password_min_length
        return 15 if self.mfa_policy is MfaPolicy.OPTIONAL else 12

    @property
    def jwt_issuer(self) -> str:
        return self.token_issuer or self.public_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def normalise_database_url(url: str) -> str:
    """Accept the plain scheme spellings and pick the async driver the service uses."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            "CLOUDMFA_DATABASE_URL must look like sqlite+aiosqlite:///path or postgresql://host/db"
        )
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return f"sqlite+aiosqlite://{rest}"
    raise ValueError(
        f"unsupported database scheme {scheme!r}: use sqlite+aiosqlite:// or postgresql://"
    )

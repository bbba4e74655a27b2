"""Typed settings, built once at start-up from ``CLOUDMFA_*`` variables and a ``.env`` file.

Nothing below reads the environment on its own: the settings object is passed down
(``create_app(settings)``), so tests build one with the values they need.
"""

from __future__ import annotations

import ipaddress
import posixpath
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
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
    # Errors never quote the input: it holds keys, passwords and connection strings.
    model_config = SettingsConfigDict(
        env_prefix="CLOUDMFA_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
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
    secret_keys_file: str | None = None  # a file holding that ring (a mounted secret)
    secret_keys_kms: str | None = None  # "id:base64(KMS ciphertext),...": KMS-wrapped data keys
    # A signing key the operator provides (PEM of an EC P-256 private key), instead of one the
    # service generates; imported into the database sealed, like a generated one.
    signing_key: SecretStr | None = None
    signing_key_file: str | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None  # a private or emulated AWS endpoint
    totp_algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1"
    totp_digits: int = Field(default=6, ge=6, le=8)
    totp_period: int = Field(default=30, ge=15, le=120)
    mfa_token_ttl_s: int = Field(default=300, ge=30, le=3600)
    mfa_max_attempts: int = Field(default=5, ge=1, le=20)
    mfa_max_sends: int = Field(default=5, ge=1, le=20)  # codes sent per mfa_token
    remember_device_days: int = Field(default=30, ge=0, le=400)
    # WebAuthn (factors/webauthn/): the relying party is the registrable domain passkeys are
    # bound to; the origins are the pages allowed to use them (default: the public URL).
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str | None = None  # what the browser shows; defaults to the issuer
    webauthn_origins: Annotated[tuple[str, ...], NoDecode] = ()
    webauthn_user_verification: Literal["required", "preferred"] = "required"
    webauthn_attestation: Literal["none", "direct"] = "none"
    # With `direct`: the AAGUIDs accepted (empty: any), checked against these root certificates
    webauthn_allowed_aaguids: Annotated[tuple[str, ...], NoDecode] = ()
    webauthn_attestation_roots: str | None = None  # a PEM file of root certificates

    # Throttling
    login_max_failures: int = Field(default=10, ge=1, le=100)
    login_failure_window_s: int = Field(default=900, ge=1)
    ip_rate_limit: str = "60/minute"
    otp_resend_cooldown_s: int = Field(default=30, ge=0)

    # Codes by SMS and email (factors/codes/) and what limits their sending (flows/send_limits.py)
    otp_digits: int = Field(default=6, ge=6, le=8)
    destination_hourly_limit: int = Field(default=10, ge=1)  # messages to one address or number
    sms_allowed_countries: Annotated[frozenset[str], NoDecode] = frozenset()  # empty: all
    sms_country_hourly_budget: int = Field(default=1000, ge=0)  # per country; 0: no budget
    sms_global_hourly_budget: int = Field(default=10000, ge=0)  # every country; 0: no budget
    password_reset_ttl_s: int = Field(default=1800, ge=60, le=86400)

    # Delivery (delivery/): each channel's providers, a comma-separated failover chain
    email_provider: Annotated[tuple[str, ...], NoDecode] = ("console",)
    sms_provider: Annotated[tuple[str, ...], NoDecode] = ("console",)
    # One provider's attempt at one message, connection included, before it counts as down.
    delivery_timeout_s: float = Field(default=10, gt=0, le=120)
    # A PEM file of CA certificates trusted besides the system's, for internal relays and
    # gateways (SMTP over TLS, the SMS webhook, a private Twilio or Azure address).
    delivery_ca_file: str | None = None
    email_from: str | None = None  # the sender: smtp, aws-ses and azure (a verified address)
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)  # unset: 25, 587 or 465
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    ses_configuration_set: str | None = None  # an SES configuration set (event publishing)
    sns_sender_id: str | None = None  # the alphanumeric sender ID, where the country allows it
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None  # an E.164 number of the account, or:
    twilio_messaging_service_sid: str | None = None  # a Messaging Service (MG…), preferred
    twilio_api_base_url: str | None = None  # a private gateway; unset: Twilio's own address
    sms_webhook_url: str | None = None
    sms_webhook_secret: SecretStr | None = None  # signs each POST (HMAC-SHA256)
    # "endpoint=https://<resource>.communication.azure.com/;accesskey=<base64 key>"
    azure_communication_connection_string: SecretStr | None = None
    azure_sms_from: str | None = None  # a number (E.164) or sender ID of the resource
    # Who sends (delivery/): `in-process` (serve itself, after each commit) or `worker` (serve
    # queues on Redis, `cloudmfa worker` sends).
    delivery: Literal["in-process", "worker"] = "in-process"
    delivery_concurrency: int = Field(default=32, ge=1, le=1000)  # messages sent at once
    delivery_max_attempts: int = Field(default=5, ge=1, le=20)  # transient refusals, then failed
    delivery_retention_hours: int = Field(default=168, ge=1)  # sent/failed rows, then pruned

    # Tokens and sessions
    access_token_ttl_s: int = Field(default=600, ge=30, le=3600)
    session_max_hours: float = Field(default=24, gt=0)
    session_idle_minutes: float = Field(default=60, gt=0)
    reauth_window_s: int = Field(default=600, ge=30)

    # Pruning rows past their use (flows/maintenance.py)
    prune_interval_s: int = Field(default=3600, ge=0)  # in the background of serve; 0: off
    pending_factor_max_hours: int = Field(default=24, ge=1)  # never activated: then deleted
    audit_retention_days: int = Field(default=0, ge=0)  # 0: audit events are kept forever
    audit_seal_interval_s: int = Field(default=5, ge=0)  # chain new audit events; 0: off

    # The HTTP edge
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    trusted_proxies: str = ""  # comma-separated addresses or CIDRs whose X-Forwarded-* is believed
    # Origins (scheme://host[:port]) whose pages may call the API from script; empty: none.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    log_level: str = "info"
    log_format: Literal["console", "json"] = "console"
    shutdown_grace_s: int = Field(default=30, ge=0, le=3600)  # in-flight requests on SIGTERM
    # /metrics answers 401 without it as a Bearer token; unset: /metrics is open.
    metrics_token: SecretStr | None = None

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

    @field_validator("email_provider", "sms_provider", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("email_provider", "sms_provider")
    @classmethod
    def _known_providers(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        from cloudmfa.delivery.base import Channel
        from cloudmfa.delivery.providers import PROVIDER_NAMES

        channel: Channel = "email" if info.field_name == "email_provider" else "sms"
        known = PROVIDER_NAMES[channel]
        if not value:
            raise ValueError(f"name at least one provider: {', '.join(known)}")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(
                f"unknown {channel} provider(s) {', '.join(unknown)}; "
                f"choose from {', '.join(known)}"
            )
        if len(set(value)) != len(value):
            raise ValueError("a provider is named twice")
        return value

    @field_validator("sms_webhook_url", "twilio_api_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("azure_communication_connection_string")
    @classmethod
    def _empty_connection_string_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _providers_have_their_settings(self) -> Settings:
        """A configured provider without a setting it needs stops the service at start, naming
        the variable, rather than failing each message later."""
        from cloudmfa.delivery.azure import parse_connection_string
        from cloudmfa.delivery.providers import missing_settings

        if self.azure_communication_connection_string is not None:
            # Checked here, not in a field validator, whose error would quote the value (and
            # so the access key).
            try:
                parse_connection_string(
                    self.azure_communication_connection_string.get_secret_value()
                )
            except ValueError as exc:
                raise ValueError(f"CLOUDMFA_AZURE_COMMUNICATION_CONNECTION_STRING {exc}") from None
        missing = missing_settings(self)
        if missing:
            raise ValueError("; ".join(missing))
        return self

    @field_validator("sms_allowed_countries", mode="before")
    @classmethod
    def _split_countries(cls, value: object) -> object:
        if isinstance(value, str):
            value = frozenset(part.strip().upper() for part in value.split(",") if part.strip())
        return value

    @field_validator("sms_allowed_countries")
    @classmethod
    def _known_countries(cls, value: frozenset[str]) -> frozenset[str]:
        import phonenumbers

        unknown = sorted(c for c in value if c not in phonenumbers.SUPPORTED_REGIONS)
        if unknown:
            raise ValueError(
                f"unknown country code(s) {', '.join(unknown)}: use ISO 3166-1 alpha-2 codes "
                "such as US,GB,DE"
            )
        return value

    @field_validator("webauthn_origins", "webauthn_allowed_aaguids", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        return value

    @field_validator("webauthn_allowed_aaguids")
    @classmethod
    def _aaguids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import uuid

        try:
            return tuple(str(uuid.UUID(aaguid)) for aaguid in value)
        except ValueError:
            raise ValueError("each AAGUID must be a UUID") from None

    @model_validator(mode="after")
    def _origins_within_rp_id(self) -> Settings:
        """Each configured WebAuthn origin is a bare origin on the rp id or a subdomain of it,
        over HTTPS unless on localhost: a browser refuses any other, so say so at start."""
        from urllib.parse import urlsplit

        rp_id = self.webauthn_rp_id.lower()
        for origin in self.webauthn_origins:
            parts = urlsplit(origin)
            host = (parts.hostname or "").lower()
            bare = parts.scheme in ("https", "http") and host and not parts.path.strip("/")
            local = host == "localhost" or host.endswith(".localhost")
            if not bare or (parts.scheme == "http" and not local):
                raise ValueError(
                    f"CLOUDMFA_WEBAUTHN_ORIGINS: {origin!r} is not an https:// origin "
                    "(scheme, host and port only; http only on localhost)"
                )
            if host != rp_id and not host.endswith("." + rp_id):
                raise ValueError(
                    f"CLOUDMFA_WEBAUTHN_ORIGINS: {origin!r} is not on the relying party "
                    f"{rp_id!r} (CLOUDMFA_WEBAUTHN_RP_ID) or a subdomain of it"
                )
        return self

    @model_validator(mode="after")
    def _attestation_roots_with_allow_list(self) -> Settings:
        # An AAGUID is only the authenticator's word until a certificate chain vouches for it.
        if self.webauthn_allowed_aaguids and not self.webauthn_attestation_roots:
            raise ValueError(
                "CLOUDMFA_WEBAUTHN_ALLOWED_AAGUIDS needs CLOUDMFA_WEBAUTHN_ATTESTATION_ROOTS "
                "(the root certificates that vouch for an authenticator's AAGUID)"
            )
        if self.webauthn_allowed_aaguids and self.webauthn_attestation != "direct":
            raise ValueError(
                "CLOUDMFA_WEBAUTHN_ALLOWED_AAGUIDS needs CLOUDMFA_WEBAUTHN_ATTESTATION=direct"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        """Addresses or networks, as ``ipaddress`` reads them (a network with host bits set,
        such as 10.0.0.1/8, is refused: it is most likely a typo)."""
        parts = [part.strip() for part in value.split(",") if part.strip()]
        for part in parts:
            try:
                ipaddress.ip_network(part)
            except ValueError:
                raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
        return ",".join(parts)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each an exact origin, as a browser sends it in `Origin`: no wildcard, no path."""
        for origin in value:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or "*" in origin
                or origin != f"{parts.scheme}://{parts.netloc}"
            ):
                raise ValueError(
                    f"{origin!r} is not an origin like https://app.example.com (no wildcard, "
                    "no path, no trailing slash)"
                )
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Settings:
        ring = [
            n for n in ("secret_keys", "secret_keys_file", "secret_keys_kms") if getattr(self, n)
        ]
        if len(ring) > 1:
            names = " and ".join(f"CLOUDMFA_{n.upper()}" for n in ring)
            raise ValueError(f"{names} are both set: give the secret key ring one way only")
        if self.signing_key is not None and self.signing_key_file:
            raise ValueError(
                "CLOUDMFA_SIGNING_KEY and CLOUDMFA_SIGNING_KEY_FILE are both set: give one"
            )
        return self

    @field_validator("metrics_token")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty variable means no token, as unset does: never "any Bearer token will do".
        return value if value is not None and value.get_secret_value() else None

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
    def effective_webauthn_origins(self) -> tuple[str, ...]:
        """The origins a WebAuthn ceremony may come from: those configured, else the public
        URL's origin."""
        if self.webauthn_origins:
            return self.webauthn_origins
        from urllib.parse import urlsplit

        parts = urlsplit(self.public_url)
        return (f"{parts.scheme}://{parts.netloc}",)

    @property
    def secure_cookies(self) -> bool:
        """API.md "Browser sessions": cookies are `Secure` unless the service is reached at
        plain http://localhost (development, where browsers would drop them)."""
        parts = urlsplit(self.public_url)
        return not (parts.scheme == "http" and parts.hostname == "localhost")

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
            "CLOUDMFA_DATABASE_URL must look like sqlite+aiosqlite:///path, postgresql://host/db"
            " or mysql://host/db"
        )
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    if scheme in ("mysql", "mariadb", "mysql+asyncmy", "mariadb+asyncmy"):
        # MariaDB and MySQL speak one protocol; SQLAlchemy's mysql dialect tells them apart
        # by the server's version string once connected.
        return f"mysql+asyncmy://{rest}"
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return f"sqlite+aiosqlite://{rest}"
    raise ValueError(
        f"unsupported database scheme {scheme!r}:"
        " use sqlite+aiosqlite://, postgresql:// or mysql://"
    )

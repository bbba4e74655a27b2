"""The schema, as SQLAlchemy Core tables: the same definitions serve SQLite, PostgreSQL and
MariaDB/MySQL.

Core rather than the ORM: the hot paths (login, token refresh, code verification) are single
statements, and the ORM's unit of work costs more CPU than the statement itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

_NAIVE_UTC_DIALECTS = ("sqlite", "mysql", "mariadb")  # no zone kept: UTC by convention


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite and MariaDB/MySQL (which keep no zone) as on
    PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            # DATETIME keeps whole seconds unless told otherwise; microseconds as elsewhere
            # (a session's auth_time is compared with times taken later in the same second).
            # DATETIME rather than TIMESTAMP: no conversion by the session's time zone, no 2038.
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name in _NAIVE_UTC_DIALECTS else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
AutoIncrement: Any = BigInteger().with_variant(Integer(), "sqlite")

# MariaDB/MySQL compare text by the table's collation, and the server's default is case- and
# accent-insensitive: "jose@…" would find the row of "josé@…" and the unique index would refuse
# the second. Emails, tokens and codes are compared exactly, as PostgreSQL and SQLite do; every
# table says so (other databases ignore these options).
MYSQL_TABLE: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("display_name", String(200), nullable=True),
    Column("password_hash", String(255), nullable=False),
    Column("roles", JSON, nullable=False, default=list),
    Column("locked_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # On PostgreSQL, the admin search has indexes of its own (store/users.py search): the
    # emails by code point, and trigrams of substr(email, 2) and lower(display_name)
    # (migrations 0006 and 0008). They are not declared here, being PostgreSQL's own.
    **MYSQL_TABLE,
)

factors = Table(
    "factors",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(16), nullable=False),
    Column("label", String(100), nullable=True),
    Column("status", String(16), nullable=False),  # pending | active
    Column("secret", LargeBinary, nullable=True),  # encrypted at rest (secretbox)
    Column("data", JSON, nullable=False, default=dict),  # type-specific, never secret
    # Found fast and unique per type (a WebAuthn credential id); types that need none leave it.
    Column("lookup_key", String(255), nullable=True),
    # Only ever advanced by a claim (store/claims.py): TOTP's last accepted time step, a
    # WebAuthn signature count.
    Column("counter", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("activated_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    Index("ix_factors_user_id_status", "user_id", "status"),
    Index("ix_factors_type_lookup_key", "type", "lookup_key", unique=True),
    **MYSQL_TABLE,
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # The code's first group, which finds its row; NULL for codes issued before codes were
    # stored under a salted hash (factors/recovery/codes.py).
    Column("lookup", String(8), nullable=True),
    Column("code_hash", String(255), nullable=False),  # argon2id (SHA-256 for the old ones)
    Column("created_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Index("ix_recovery_codes_user_id_lookup", "user_id", "lookup"),
    **MYSQL_TABLE,
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("auth_time", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),  # the absolute lifetime
    Column("amr", JSON, nullable=False),
    Column("acr", String(32), nullable=True),
    Column("mfa_verified", Boolean, nullable=False, default=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_reason", String(64), nullable=True),
    Index("ix_sessions_user_id", "user_id"),
    **MYSQL_TABLE,
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 of a 256-bit random token
    Column("session_id", String(36), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Index("ix_refresh_tokens_session_id", "session_id"),
    **MYSQL_TABLE,
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", AutoIncrement, primary_key=True, autoincrement=True),  # cursor order
    Column("id", String(36), nullable=False, unique=True),
    Column("at", UTCDateTime, nullable=False),
    Column("type", String(64), nullable=False),
    Column("actor_id", String(36), nullable=True),
    Column("subject_id", String(36), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("details", JSON, nullable=False, default=dict),
    # The hash chain (store/audit_chain.py): written by the sealer after the event commits, so
    # that writing an event never waits on the chain. NULL until sealed.
    Column("chain_seq", BigInteger, nullable=True, unique=True),  # position in the chain
    Column("chain_hash", String(64), nullable=True),  # SHA-256 over the predecessor's and content
    Index("ix_audit_events_actor_id", "actor_id"),
    Index("ix_audit_events_subject_id", "subject_id"),
    # Paging newest first within one type (migration 0006).
    Index("ix_audit_events_type_seq", "type", "seq"),
    **MYSQL_TABLE,
)

# One row (id 1): where the audit chain starts (after what retention pruned) and where it ends.
# Sealers and the prune lock this row, never the events' table, so sign-ins never wait on it.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("base_seq", BigInteger, nullable=False),  # the last position pruned (0: none)
    Column("base_hash", String(64), nullable=False),  # its hash (the genesis hash: none)
    Column("head_seq", BigInteger, nullable=False),  # the last position sealed
    Column("head_hash", String(64), nullable=False),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_key_pem", Text, nullable=False),
    Column("public_jwk", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),  # no longer signs; verifies until expiry
    **MYSQL_TABLE,
)

remembered_devices = Table(
    "remembered_devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # SHA-256 of the token
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Index("ix_remembered_devices_user_id", "user_id"),
    **MYSQL_TABLE,
)

# The transactional outbox of messages to users (delivery/outbox.py): a flow inserts a row in
# the transaction that decides to send, so a message exists exactly when that decision commits;
# a dispatcher (in-process, or `cloudmfa worker`) claims and sends it afterwards.
delivery_outbox = Table(
    "delivery_outbox",
    metadata,
    Column("id", String(36), primary_key=True),  # also the providers' idempotency key
    Column("channel", String(8), nullable=False),  # sms | email
    # The message (destination, subject, text, html) sealed with the secretbox: its text holds
    # a code or a reset link. Erased (NULL) once the message is sent or has failed for good.
    Column("sealed", LargeBinary, nullable=True),
    Column("status", String(8), nullable=False),  # queued | sending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    # queued: not before then; sending: the claim's lease ends then (another may take it).
    Column("next_try_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),  # sent or failed
    Column("provider", String(64), nullable=True),  # the provider that took it
    Column("reason", String(500), nullable=True),  # the providers' last refusals
    Column("user_id", String(36), nullable=True),  # the subject of its audit events
    # What a failure is reported to ("attempt:<id>:<factor id>" or "enrolment:<factor id>"),
    # as its SHA-256: an attempt's id is long, and the row need not say which attempt it was.
    Column("binding", String(64), nullable=True),
    Index("ix_delivery_outbox_status_next_try_at", "status", "next_try_at"),
    Index("ix_delivery_outbox_binding", "binding"),
    **MYSQL_TABLE,
)

"""The service's own Prometheus metrics, beyond the HTTP requests the edge counts (api/edge.py).

Framework-free, so flows, the password hashing, the stores and the delivery of codes record
here without knowing HTTP. Every label takes values from a small fixed set (outcomes, factor
types the registry knows, channels, providers), never a user's data: no label may grow the
number of time series without bound, and none may hold a secret.

With several `serve` workers each records into files in PROMETHEUS_MULTIPROC_DIR (set before
the workers start, so before this module is imported) and a scrape adds them up; a gauge then
sums the live workers' values (``multiprocess_mode="livesum"``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

# --- sign-ins --------------------------------------------------------------------------------

PASSWORD_CHECKS = Counter(
    "cloudmfa_password_checks",
    "The password step of login, by outcome: signed_in (no second factor needed), "
    "remembered_device, second_factor_required, wrong_password, unknown_account, "
    "account_locked, rate_limited",
    ["outcome"],
    registry=REGISTRY,
)
SECOND_FACTOR_CHECKS = Counter(
    "cloudmfa_second_factor_checks",
    "Second-factor verifications, by factor type and outcome: succeeded, failed, expired, "
    "account_locked, rate_limited",
    ["factor_type", "outcome"],
    registry=REGISTRY,
)
SIGN_INS = Counter(
    "cloudmfa_sign_ins",
    "Completed sign-ins (a session opened), by the factor that completed them: a factor "
    "type, remembered_device, or none (password only)",
    ["factor_type"],
    registry=REGISTRY,
)

# --- codes sent by SMS or email (fed by the delivery of codes) -------------------------------

CODES_SENT = Counter(
    "cloudmfa_codes_sent",
    "Codes handed to a provider, by channel (sms, email), provider and outcome "
    "(sent, failed, refused)",
    ["channel", "provider", "outcome"],
    registry=REGISTRY,
)
CODE_DELIVERY_SECONDS = Histogram(
    "cloudmfa_code_delivery_seconds",
    "Time the provider took to accept a code, by channel and provider",
    ["channel", "provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
MESSAGE_WAIT_SECONDS = Histogram(
    "cloudmfa_message_wait_seconds",
    "Time from the commit of a message (a code, a link, a notice) to a provider accepting it, "
    "through the outbox, the queue and any retries, by channel",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)

# --- refusals --------------------------------------------------------------------------------

RATE_LIMITED = Counter(
    "cloudmfa_rate_limited",
    "Requests refused with 429, by the limit that refused them: ip, account, resend_cooldown, "
    "attempt_sends, destination, sms_budget, other",
    ["kind"],
    registry=REGISTRY,
)

# --- pools -----------------------------------------------------------------------------------

PASSWORD_HASH_QUEUE = Gauge(
    "cloudmfa_password_hash_queue",
    "Password hashes waiting for a thread of the argon2 pool",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
PASSWORD_HASHES_RUNNING = Gauge(
    "cloudmfa_password_hashes_running",
    "Password hashes being computed",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
PASSWORD_HASH_THREADS = Gauge(
    "cloudmfa_password_hash_threads",
    "Threads of the argon2 pool",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DB_POOL_CONNECTIONS = Gauge(
    "cloudmfa_db_pool_connections",
    "Database connections of the pool: open, and in_use (checked out by a request)",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DB_POOL_CAPACITY = Gauge(
    "cloudmfa_db_pool_capacity",
    "Database connections the pool may open (pool size plus overflow)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
REDIS_POOL_IN_USE = Gauge(
    "cloudmfa_redis_pool_connections_in_use",
    "Redis connections checked out for a command (one server or Sentinel's master)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
REDIS_POOL_CAPACITY = Gauge(
    "cloudmfa_redis_pool_capacity",
    "Redis connections the pool may open",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

# The rate-limit kinds and code outcomes a caller may name; anything else is counted as other.
RATE_LIMIT_KINDS = frozenset(
    {"ip", "account", "resend_cooldown", "attempt_sends", "destination", "sms_budget"}
)
CODE_OUTCOMES = frozenset({"sent", "failed", "refused"})


def password_checked(outcome: str) -> None:
    PASSWORD_CHECKS.labels(outcome).inc()


def second_factor_checked(factor_type: str | None, outcome: str) -> None:
    SECOND_FACTOR_CHECKS.labels(factor_type or "unknown", outcome).inc()


def signed_in(factor_type: str) -> None:
    SIGN_INS.labels(factor_type).inc()


def code_sent(channel: str, provider: str, outcome: str, seconds: float | None = None) -> None:
    """For the delivery of codes: one call per code handed (or not) to a provider.

    ``channel`` is ``sms`` or ``email``; ``provider`` the configured one (``console``,
    ``smtp``, ``aws-ses``, ``aws-sns``, ``twilio``, ``webhook``); ``outcome`` ``sent``,
    ``failed`` (the provider refused or did not answer) or ``refused`` (a limit stopped it
    before the provider); ``seconds`` how long the provider took, when it was asked."""
    CODES_SENT.labels(channel, provider, outcome if outcome in CODE_OUTCOMES else "failed").inc()
    if seconds is not None:
        CODE_DELIVERY_SECONDS.labels(channel, provider).observe(seconds)


def message_waited(channel: str, seconds: float) -> None:
    """From the commit of a message to a provider accepting it (queue, retries and all)."""
    MESSAGE_WAIT_SECONDS.labels(channel).observe(seconds)


def rate_limited(kind: str) -> None:
    RATE_LIMITED.labels(kind if kind in RATE_LIMIT_KINDS else "other").inc()


def exposition() -> bytes:
    """This process's figures (the multiprocess collector reads them from the files instead)."""
    return generate_latest(REGISTRY)


def capacity_started(*, db: int, redis: int, hash_threads: int) -> None:
    """A serving process's pools (Services.start); ``capacity_stopped`` takes them back."""
    DB_POOL_CAPACITY.inc(db)
    REDIS_POOL_CAPACITY.inc(redis)
    PASSWORD_HASH_THREADS.inc(hash_threads)


def capacity_stopped(*, db: int, redis: int, hash_threads: int) -> None:
    DB_POOL_CAPACITY.dec(db)
    REDIS_POOL_CAPACITY.dec(redis)
    PASSWORD_HASH_THREADS.dec(hash_threads)


def watch_db_pool(engine: Any) -> None:
    """Count the engine's pool: connections opened and closed, checked out and returned."""
    from sqlalchemy import event

    open_, in_use = DB_POOL_CONNECTIONS.labels("open"), DB_POOL_CONNECTIONS.labels("in_use")
    sync_engine = engine.sync_engine
    event.listen(sync_engine, "connect", lambda *_: open_.inc())
    event.listen(sync_engine, "close", lambda *_: open_.dec())
    event.listen(sync_engine, "close_detached", lambda *_: open_.dec())
    event.listen(sync_engine, "checkout", lambda *_: in_use.inc())
    event.listen(sync_engine, "checkin", lambda *_: in_use.dec())

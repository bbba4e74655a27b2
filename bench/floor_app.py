"""The floor for the TOTP verify step (benchmark (f), for information): the step's round trips
and cryptography written as one bare FastAPI endpoint, with none of the service around them.

Per request, as the service's verify step does: the per-IP limit (the `limits` library through
the service's Redis client), the two ephemeral-store calls of the step (take the mfa_token with
its lease, count the try and reserve an account attempt in one script; spend the token), one
data-modifying statement that claims the factor row and inserts a session, a refresh token and
two audit events, an AES-GCM decryption of the seed (which the service keeps, encrypted, with
the mfa_token, so no factor read), a TOTP check and an ES256 signature.

What (b) reaches of (f) is what the service's own layers cost (middleware, dependencies,
flows, factor modules, models); what (f) reaches of (e) is what the step's work costs.

Run as ``uvicorn bench.floor_app:app --workers 2`` with BENCH_PG_DSN and BENCH_REDIS_URL set,
after ``create_tables`` has run on that database.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
import pyotp
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request
from pydantic import BaseModel

from bench.lean_app import open_pool
from cloudmfa.security.throttle import IpRateLimiter
from cloudmfa.store.ephemeral import RedisStore, Reservation

TABLES = """
CREATE TABLE floor_factors (id int PRIMARY KEY, secret bytea NOT NULL, last_step bigint);
CREATE TABLE floor_sessions (id varchar(36) PRIMARY KEY, factor_id int NOT NULL
    REFERENCES floor_factors (id), created_at timestamptz NOT NULL, amr json NOT NULL);
CREATE INDEX ON floor_sessions (factor_id);
CREATE TABLE floor_refresh_tokens (token_hash varchar(64) PRIMARY KEY,
    session_id varchar(36) NOT NULL REFERENCES floor_sessions (id));
CREATE INDEX ON floor_refresh_tokens (session_id);
CREATE TABLE floor_events (seq bigserial PRIMARY KEY, id varchar(36) NOT NULL UNIQUE,
    type varchar(64) NOT NULL, subject_id varchar(36), details json NOT NULL);
CREATE INDEX ON floor_events (subject_id);
CREATE INDEX ON floor_events (type);
"""

_KEY = bytes(32)  # a fixed key: the floor measures the decryption, not key management
_NONCE = bytes(12)

_COMPLETE = """
WITH claim AS (
    UPDATE floor_factors SET last_step = coalesce(last_step, 0) + 1 WHERE id = $1 RETURNING id
), new_session AS (
    INSERT INTO floor_sessions (id, factor_id, created_at, amr)
    SELECT $2, id, now(), $3::json FROM claim RETURNING id
), new_refresh_token AS (
    INSERT INTO floor_refresh_tokens (token_hash, session_id)
    SELECT $4, id FROM new_session RETURNING 1
), new_events AS (
    INSERT INTO floor_events (id, type, subject_id, details)
    SELECT e.id, e.type, $2, e.details FROM new_session,
        json_to_recordset($5::json) AS e(id varchar, type varchar, details json)
    RETURNING 1
)
SELECT count(*) FROM new_session
"""


async def create_tables(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TABLES)
        await conn.execute(
            "INSERT INTO floor_factors SELECT g, $2, NULL FROM generate_series(0, $1) g",
            rows,
            _State.sealed_seed,
        )
    finally:
        await conn.close()


class _State:
    pool: asyncpg.Pool
    store: RedisStore
    limiter: IpRateLimiter
    signing_key = ec.generate_private_key(ec.SECP256R1())
    sealed_seed = AESGCM(_KEY).encrypt(_NONCE, pyotp.random_base32(32).encode(), None)


state = _State()


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    redis_url = os.environ["BENCH_REDIS_URL"]
    prefix = f"bench-floor-{secrets.token_hex(4)}:"
    state.pool = await open_pool(os.environ["BENCH_PG_DSN"])  # no reset query, as the service
    state.store = RedisStore(redis_url, prefix=prefix)
    state.limiter = IpRateLimiter(
        "100000000/minute", redis_url=redis_url, prefix=prefix, redis=state.store.redis
    )
    yield
    await state.pool.close()
    await state.store.close()


app = FastAPI(lifespan=_lifespan)


class VerifyRequest(BaseModel):
    id: int
    code: str


@app.get("/")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/verify")
async def verify(body: VerifyRequest, request: Request) -> dict[str, Any]:
    store = state.store
    await state.limiter.hit(request.client.host if request.client else "unknown")
    # No mfa_token is stored (that is the password step's work), so the first script finds
    # none and returns early: the round trips are the same, the server-side work a little less.
    tag = f"{{{body.id}}}"  # one hash tag, as the service's attempt and account keys share
    token, tries, lease = f"t:{tag}", f"n:{tag}", f"l:{tag}"
    account = Reservation(f"a:{tag}", ttl_s=900, limit=10)
    await store.begin_use(
        token, counter=tries, lease=lease, ttl_s=300, lease_s=10, max_uses=5, reserve=account
    )
    async with state.pool.acquire() as conn:
        seed = AESGCM(_KEY).decrypt(_NONCE, state.sealed_seed, None).decode()
        pyotp.TOTP(seed).verify(body.code, valid_window=1)
        events = [
            {"id": str(uuid.uuid4()), "type": kind, "details": {"factor_type": "totp"}}
            for kind in ("mfa.succeeded", "login.succeeded")
        ]
        session_id = str(uuid.uuid4())
        await conn.fetchval(
            _COMPLETE,
            body.id,
            session_id,
            json.dumps(["pwd", "otp", "mfa"]),
            secrets.token_hex(32),
            json.dumps(events),
        )
    await store.pop_and_delete(token, account.key, lease)
    access_token = jwt.encode(
        {"sub": str(body.id), "sid": session_id, "amr": ["pwd", "otp", "mfa"]},
        state.signing_key,
        algorithm="ES256",
        headers={"kid": "floor"},
    )
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 600,
        "refresh_token": secrets.token_urlsafe(32),
        "session_id": session_id,
    }

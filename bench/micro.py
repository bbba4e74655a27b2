"""Micro-measurements behind choices in the verify path (bench/README.md), in CPU µs per call.

    .venv/bin/python bench/micro.py            # everything but delivery
    .venv/bin/python bench/micro.py edge       # only the service's own edge (no PostgreSQL)
    .venv/bin/python bench/micro.py delivery   # only the delivery worker's per-message steps

Each variant runs interleaved with its rival, several times, and the best time counts: this
VM's speed drifts, and the best of interleaved runs is what is least disturbed by it.
Needs PostgreSQL on 127.0.0.1:5432 (the pool checkout) like the rest of bench/.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
import jwt
import pyotp
import uvloop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI, Request, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloudmfa.api.edge import EdgeMiddleware, Metrics  # noqa: E402
from cloudmfa.app import create_app  # noqa: E402
from cloudmfa.config import Settings  # noqa: E402
from cloudmfa.factors.totp.verify import TotpParameters, verify_totp_code  # noqa: E402
from cloudmfa.logs import formatter  # noqa: E402
from cloudmfa.services import Services  # noqa: E402

PG_DSN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ROUNDS = 5

Call = Callable[[], Awaitable[Any]]


async def best_of(variants: dict[str, Call], calls: int) -> dict[str, float]:
    """CPU µs per call of each variant: the best of ROUNDS interleaved runs."""
    best = dict.fromkeys(variants, float("inf"))
    for fn in variants.values():
        for _ in range(calls // 10):
            await fn()  # warm
    for _ in range(ROUNDS):
        for name, fn in variants.items():
            started = time.process_time()
            for _ in range(calls):
                await fn()
            best[name] = min(best[name], 1e6 * (time.process_time() - started) / calls)
    return best


def report(title: str, results: dict[str, float]) -> None:
    print(title)
    for name, us in results.items():
        print(f"  {us:7.1f} µs  {name}")


# --- FastAPI: what a dependency and a response model cost, in-process through ASGI ---------


async def _dep(request: Request) -> int:
    return 1


class _Body(BaseModel):
    x: int


class _Tokens(BaseModel):
    status: Literal["authenticated"] = "authenticated"
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str
    session_id: str
    device_token: str | None = None


def _tokens() -> _Tokens:
    return _Tokens(
        access_token="a" * 600, expires_in=600, refresh_token="r" * 43, session_id="s" * 36
    )


_app = FastAPI()
_D = Annotated[int, Depends(_dep)]


@_app.post("/none", response_model=_Tokens, response_model_exclude_none=True)
async def _none(body: _Body) -> _Tokens:
    return _tokens()


@_app.post("/four-dependencies", response_model=_Tokens, response_model_exclude_none=True)
async def _four(body: _Body, a: _D, b: _D, c: _D, d: _D) -> _Tokens:
    return _tokens()


@_app.post("/response-built-by-hand", response_model=_Tokens, response_model_exclude_none=True)
async def _by_hand(body: _Body) -> Response:
    tokens = _tokens()
    return Response(tokens.model_dump_json(exclude_none=True), media_type="application/json")


_ROUTES = ["/none", "/four-dependencies", "/response-built-by-hand"]


def _asgi_call(app: Any, method: str, path: str, body: bytes = b"") -> Call:
    headers = [(b"content-type", b"application/json")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def call() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(_message: dict[str, Any]) -> None:
            return None

        await app(dict(scope), receive, send)

    return call


def _asgi_post(path: str) -> Call:
    return _asgi_call(_app, "POST", path, b'{"x": 1}')


# --- the service's own edge: every request passes it ------------------------------------------


async def edge() -> None:
    """Whole requests through the service's app (SQLite, in-process store), edge included."""
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=data_dir,
            secret_keys="b1:" + "A" * 43 + "=",
            ip_rate_limit="1000000000/minute",  # evaluated on every request, never refused
        )
        app = create_app(settings)
        refresh = "/api/v1/auth/refresh"
        async with app.router.lifespan_context(app):
            report(
                "The service's app, in-process ASGI call (SQLite, in-process store)",
                await best_of(
                    {
                        "GET /healthz": _asgi_call(app, "GET", "/healthz"),
                        "POST /api/v1/auth/refresh, unknown token (401)": _asgi_call(
                            app, "POST", refresh, b'{"refresh_token": "not-a-real-one"}'
                        ),
                        "POST /api/v1/auth/refresh, body not JSON (422)": _asgi_call(
                            app, "POST", refresh, b'{"refresh_token": '
                        ),
                    },
                    3000,
                ),
            )


async def edge_layer() -> None:
    """The edge middleware on its own (request id, headers, CORS check, metrics, the access
    line), around an app that answers at once: what it adds to every request."""

    async def bare(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    with tempfile.TemporaryDirectory() as data_dir, open(os.devnull, "w") as devnull:  # noqa: ASYNC230
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=data_dir,
            secret_keys="b1:" + "A" * 43 + "=",
            cors_origins=("https://app.example.com",),
        )
        edge = EdgeMiddleware(
            bare,
            services=Services.build(settings),
            max_body_bytes=settings.max_body_bytes,
            metrics=Metrics(),
            cors_origins=settings.cors_origins,
        )
        # The access line rendered as `serve` renders it, into /dev/null.
        access = logging.getLogger("cloudmfa.access")
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(formatter("json"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        through_edge = _asgi_call(edge, "GET", "/healthz")

        async def logged() -> None:
            access.disabled = False
            await through_edge()

        async def not_logged() -> None:
            access.disabled = True
            await through_edge()

        report(
            "The edge middleware around an app that answers at once (GET /healthz)",
            await best_of(
                {
                    "the bare app": _asgi_call(bare, "GET", "/healthz"),
                    "edge, access line off": not_logged,
                    "edge, access line as JSON": logged,
                },
                5000,
            ),
        )
        access.removeHandler(handler)


# --- delivery: what the worker does for each message (bench/README.md, "(g)") ---------------

SENDS_AT_ONCE = 32  # cloudmfa worker's default concurrency


async def delivery() -> None:
    """The claim's UPDATE … RETURNING built on every call (as it was) against built once with
    bind parameters (store/outbox.py), on PostgreSQL; and the webhook's POST through httpx (as
    it was) against aiohttp (delivery/webhook.py), 32 at once against bench/sms_receiver.py in
    a process of its own (only this process's CPU counts)."""
    import json
    import secrets
    import uuid
    from datetime import UTC, datetime, timedelta

    import httpx
    from sqlalchemy import update

    from bench.run import SmsReceiver, create_pg_database, drop_pg_database
    from cloudmfa.delivery.base import Message
    from cloudmfa.delivery.webhook import WebhookProvider
    from cloudmfa.store import outbox as outbox_repo
    from cloudmfa.store.db import create_engine, read_only
    from cloudmfa.store.models import delivery_outbox as t
    from cloudmfa.store.models import metadata

    name, url = await create_pg_database()
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            row_id, now = str(uuid.uuid4()), datetime.now(UTC)
            await outbox_repo.insert_row(
                conn, outbox_repo.NewRow(row_id, "sms", b"x" * 200, now, None, None)
            )
        single = read_only(engine)
        # A lease already over: the same row can be claimed again and again.
        lapsed = {"now": now, "lease_until": now - timedelta(seconds=1)}

        async def built_each_time() -> None:
            stmt = (
                update(t)
                .where(
                    t.c.id == row_id,
                    t.c.status.in_(("queued", "sending")),
                    t.c.next_try_at <= lapsed["now"],
                )
                .values(
                    status="sending", next_try_at=lapsed["lease_until"], attempts=t.c.attempts + 1
                )
                .returning(
                    t.c.id,
                    t.c.channel,
                    t.c.sealed,
                    t.c.attempts,
                    t.c.created_at,
                    t.c.user_id,
                    t.c.binding,
                )
            )
            async with single.connect() as conn:
                assert (await conn.execute(stmt)).all()

        async def built_once() -> None:
            async with single.connect() as conn:
                assert await outbox_repo.claim(conn, row_id, **lapsed)

        report(
            "The claim of an outbox row (UPDATE … RETURNING, autocommit, PostgreSQL)",
            await best_of(
                {
                    "built on every call": built_each_time,
                    "built once (store/outbox.py)": built_once,
                },
                2000,
            ),
        )
    finally:
        await engine.dispose()
        await drop_pg_database(name)

    secret = secrets.token_urlsafe(16)
    with SmsReceiver(secret) as receiver:
        endpoint = f"{receiver.url}/sms"
        message = Message("sms", "+14155550100", "code", "123456 is your code")
        provider = WebhookProvider(url=endpoint, secret=secret)
        client = httpx.AsyncClient(
            timeout=10, limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)
        )
        body = json.dumps({"to": message.to, "body": message.text}).encode()

        async def through_httpx() -> None:
            async def one() -> None:
                headers = provider._headers(body, "key")
                (await client.post(endpoint, content=body, headers=headers)).raise_for_status()

            await asyncio.gather(*(one() for _ in range(SENDS_AT_ONCE)))

        async def through_aiohttp() -> None:
            sends = (provider.send(message, idempotency_key="key") for _ in range(SENDS_AT_ONCE))
            await asyncio.gather(*sends)

        try:
            per_batch = await best_of(
                {
                    "httpx (as before)": through_httpx,
                    "aiohttp (delivery/webhook.py)": through_aiohttp,
                },
                60,
            )
        finally:
            await client.aclose()
            await provider.aclose()
        report(
            f"A signed webhook POST, {SENDS_AT_ONCE} at once, per POST",
            {name: us / SENDS_AT_ONCE for name, us in per_batch.items()},
        )


# --- the rest --------------------------------------------------------------------------------


async def main() -> None:
    if sys.argv[1:] == ["delivery"]:
        await delivery()
        return
    await edge_layer()
    await edge()
    if sys.argv[1:] == ["edge"]:
        return
    report(
        "FastAPI route, in-process ASGI call (POST with a JSON body)",
        await best_of({path: _asgi_post(path) for path in _ROUTES}, 5000),
    )

    engine = create_async_engine(PG_DSN.replace("postgresql://", "postgresql+asyncpg://"))

    async def no_reset(_connection: asyncpg.Connection) -> None:
        return None

    pool = await asyncpg.create_pool(PG_DSN, min_size=2, max_size=4, reset=no_reset)

    async def sqlalchemy_raw() -> None:
        (await engine.raw_connection()).close()

    async def asyncpg_pool() -> None:
        async with pool.acquire():
            pass

    try:
        report(
            "A pooled PostgreSQL connection, taken and given back",
            await best_of(
                {
                    "SQLAlchemy pool (AsyncEngine.raw_connection)": sqlalchemy_raw,
                    "asyncpg pool, no reset query": asyncpg_pool,
                },
                3000,
            ),
        )
    finally:
        await pool.close()
        await engine.dispose()

    secret = pyotp.random_base32(32)
    now = time.time()
    code = pyotp.TOTP(secret).at(now)
    key = ec.generate_private_key(ec.SECP256R1())
    claims = {"sub": "u" * 36, "sid": "s" * 36, "iat": 1, "exp": 2, "amr": ["pwd", "otp", "mfa"]}

    async def totp() -> None:
        verify_totp_code(
            secret_base32=secret,
            code=code,
            unix_time=now,
            params=TotpParameters(),
            last_used_step=None,
        )

    async def es256_jwt() -> None:
        jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})

    async def es256_signature() -> None:
        key.sign(b"x" * 300, ec.ECDSA(hashes.SHA256()))

    report(
        "Cryptography of the verify step",
        await best_of(
            {
                "TOTP check, ±1 step (verify_totp_code)": totp,
                "access token, ES256 (PyJWT)": es256_jwt,
                "the ECDSA P-256 signature alone": es256_signature,
            },
            3000,
        ),
    )


if __name__ == "__main__":
    uvloop.run(main())

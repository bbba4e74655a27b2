"""The lean ceiling for the TOTP verify step (benchmark (e)): one endpoint on the same stack as
the service (FastAPI on uvicorn, uvloop, httptools, the same worker count) that does one
``UPDATE … RETURNING`` on PostgreSQL through asyncpg directly, with nothing else around it.
Its connections come from an asyncpg pool as asyncpg sets one up by default, which sends a
reset query whenever a connection is released; (e1), for information, is the same endpoint
without that query (``BENCH_POOL_RESET=off``).

``raw_app`` is the same endpoint as a bare ASGI callable, without the framework, to show what
the framework itself costs (reported as (e0), for information).

Run as ``uvicorn bench.lean_app:app --workers 2`` (or ``bench.lean_app:raw_app``) with
BENCH_PG_DSN set.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel

_UPDATE = "UPDATE bench_steps SET step = step + 1 WHERE id = $1 RETURNING step"
_pool: asyncpg.Pool | None = None


async def _no_reset(_connection: asyncpg.Connection) -> None:
    return None


async def open_pool(dsn: str, *, reset: bool = False) -> asyncpg.Pool:
    """An asyncpg pool. With ``reset``, asyncpg's default: a reset query (advisory unlocks,
    CLOSE ALL, UNLISTEN, RESET ALL) each time a connection comes back, which is a second round
    trip per request. Without it, nothing is sent on release, as with the service's pool
    (SQLAlchemy's); these endpoints leave no session state behind to reset."""
    if reset:
        return await asyncpg.create_pool(dsn, min_size=4, max_size=10)
    return await asyncpg.create_pool(dsn, min_size=4, max_size=10, reset=_no_reset)


async def _open_pool() -> None:
    global _pool
    # (e) is asyncpg used the ordinary way, with the pool's reset query, as the issue's
    # figure for it was measured; (e1) sets BENCH_POOL_RESET=off: strictly one statement.
    reset = os.environ.get("BENCH_POOL_RESET", "on") != "off"
    _pool = await open_pool(os.environ["BENCH_PG_DSN"], reset=reset)


async def _close_pool() -> None:
    if _pool is not None:
        await _pool.close()


async def _step(row_id: int) -> int:
    assert _pool is not None
    async with _pool.acquire() as conn:
        return int(await conn.fetchval(_UPDATE, row_id))


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await _open_pool()
    yield
    await _close_pool()


app = FastAPI(lifespan=_lifespan)


class StepRequest(BaseModel):
    id: int


class StepResponse(BaseModel):
    step: int


@app.get("/")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/step")
async def step(body: StepRequest) -> StepResponse:
    return StepResponse(step=await _step(body.id))


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _open_pool()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _close_pool()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    value = await _step(int(json.loads(body or b'{"id": 1}').get("id", 1)))
    payload = json.dumps({"step": value}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})

"""The SMS webhook receiver of (g): a bare ASGI app, run by uvicorn in a process of its own (one
worker, so one memory holds every arrival), that checks each POST's signature as
docs/delivery.md tells a receiver to and records when it arrived.

``POST /sms``: the `webhook` provider's message; 401 when the signature does not verify.
``GET /arrivals``: every arrival so far as JSON ``[[monotonic seconds, to, body], …]`` (the
clock is CLOCK_MONOTONIC, the same for every process of the machine, so the bench can subtract
its own request times); ``DELETE /arrivals`` forgets them. ``GET /`` answers 200 (ready).

    BENCH_SMS_SECRET=… uvicorn bench.sms_receiver:app --port P
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

TOLERANCE_S = 300
SECRET = os.environ.get("BENCH_SMS_SECRET", "").encode()
arrivals: list[tuple[float, str, str]] = []
refused = 0


def signed(headers: dict[bytes, bytes], body: bytes, now: float) -> bool:
    timestamp = headers.get(b"x-cloudmfa-timestamp", b"").decode()
    given = headers.get(b"x-cloudmfa-signature", b"").decode()
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_S:
        return False
    expected = "v1=" + hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        event = await receive()
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, value: object) -> None:
    content = json.dumps(value).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": content})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global refused
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    body = await _body(receive)
    if method == "POST" and path == "/sms":
        arrived = time.monotonic()
        headers = dict(scope["headers"])
        if SECRET and not signed(headers, body, time.time()):
            refused += 1
            await _answer(send, 401, {"error": "bad signature"})
            return
        payload = json.loads(body)
        arrivals.append((arrived, payload["to"], payload["body"]))
        await _answer(send, 200, {"id": str(len(arrivals))})
    elif path == "/arrivals" and method == "GET":
        await _answer(send, 200, {"arrivals": arrivals, "refused": refused})
    elif path == "/arrivals" and method == "DELETE":
        arrivals.clear()
        await _answer(send, 200, {})
    else:
        await _answer(send, 200, {})

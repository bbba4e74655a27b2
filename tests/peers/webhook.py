"""An SMS webhook receiver that checks the signature as docs/delivery.md tells a receiver to:
the HMAC-SHA256 of ``"<timestamp>.<body>"`` under the shared secret, compared in constant time,
and a timestamp no older than five minutes, so a captured request cannot be replayed later.
Requests it cannot verify answer 401 and are kept in ``refused``."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
import uuid

from peers.http import Answer, HttpPeer, Received, json_answer

TOLERANCE_S = 300


def verify(secret: bytes, headers: dict[str, str], body: bytes, now: float) -> bool:
    timestamp = headers.get("x-cloudmfa-timestamp", "")
    given = headers.get("x-cloudmfa-signature", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_S:
        return False
    expected = "v1=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


class WebhookReceiver(HttpPeer):
    def __init__(self, secret: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(tls)
        self.secret = secret.encode() if secret else None

    def answer(self, request: Received) -> Answer:
        if self.secret is not None and not verify(
            self.secret, request.headers, request.body, time.time()
        ):
            return json_answer(401, {"error": "bad signature"})
        try:
            payload = json.loads(request.body)
        except ValueError:
            return json_answer(400, {"error": "not JSON"})
        if set(payload) != {"to", "body"}:
            return json_answer(400, {"error": "want to and body"})
        return json_answer(200, {"id": str(uuid.uuid4())})

    @property
    def messages(self) -> list[dict[str, str]]:
        return [r.json() for r in self.received]

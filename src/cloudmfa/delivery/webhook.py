"""SMS through a webhook of your own: a JSON POST of ``{"to", "body"}`` (httpx).

With a secret, each request is signed so that the receiver can tell it came from this service
and refuse a replay: ``X-CloudMFA-Timestamp`` holds the Unix time of sending and
``X-CloudMFA-Signature`` is ``v1=`` and the hex HMAC-SHA256, under the secret, of
``"<timestamp>.<body>"`` (the body's exact bytes). ``Idempotency-Key`` is the same for every retry
of one message, so the receiver can send it once. docs/delivery.md shows a receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl

import httpx

from cloudmfa.clock import Clock, SystemClock
from cloudmfa.delivery.base import Message, ProviderUnavailable, Receipt
from cloudmfa.delivery.failures import refusal_for_status

TIMESTAMP_HEADER = "X-CloudMFA-Timestamp"
SIGNATURE_HEADER = "X-CloudMFA-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class WebhookProvider:
    name = "webhook"

    def __init__(
        self,
        *,
        url: str,
        secret: str | None = None,
        timeout_s: float = 10,
        tls_context: ssl.SSLContext | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.url = url
        self._secret = secret.encode() if secret else None
        self._clock = clock or SystemClock()
        # One client per provider: its connection pool is shared by every concurrent send.
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            verify=tls_context if tls_context is not None else True,
            follow_redirects=False,  # a redirected POST is a misconfigured URL, not a send
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        body = json.dumps({"to": message.to, "body": message.text}, separators=(",", ":"))
        headers = self._headers(body.encode(), idempotency_key)
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:  # refused, reset, timed out, TLS failed
            raise ProviderUnavailable(
                self.name, f"cannot reach the webhook: {type(exc).__name__}"
            ) from None
        if not response.is_success:
            raise refusal_for_status(self.name, response.status_code, response.text, message)
        return Receipt(self.name, _reference(response))

    async def aclose(self) -> None:
        await self._client.aclose()

    def _headers(self, body: bytes, idempotency_key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: idempotency_key}
        if self._secret is not None:
            timestamp = str(int(self._clock.now().timestamp()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self._secret, timestamp, body)
        return headers


def _reference(response: httpx.Response) -> str | None:
    """The receiver's id for the message, when it answers JSON with an ``id``."""
    try:
        answer = response.json()
    except ValueError:
        return None
    reference = answer.get("id") if isinstance(answer, dict) else None
    return str(reference) if reference is not None else None

"""SMS through a webhook of your own: a JSON POST of ``{"to", "body"}`` (aiohttp).

With a secret, each request is signed so that the receiver can tell it came from this service
and refuse a replay: ``X-CloudMFA-Timestamp`` holds the Unix time of sending and
``X-CloudMFA-Signature`` is ``v1=`` and the hex HMAC-SHA256, under the secret, of
``"<timestamp>.<body>"`` (the body's exact bytes). ``Idempotency-Key`` is the same for every retry
of one message, so the receiver can send it once. docs/delivery.md shows a receiver.

The client is aiohttp's, as for the twilio and Azure providers: against a local receiver, at the
delivery worker's 32 sends at once, a POST through it took about a tenth of the CPU time it took
through httpx (0.2 ms against 2 ms; bench/README.md, "(g)"), and the POST is most of what the
worker does per message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl

import aiohttp

from cloudmfa.clock import Clock, SystemClock
from cloudmfa.delivery.base import Message, ProviderUnavailable, Receipt
from cloudmfa.delivery.failures import refusal_for_status

TIMESTAMP_HEADER = "X-CloudMFA-Timestamp"
SIGNATURE_HEADER = "X-CloudMFA-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_CONNECTIONS = 64


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
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tls: ssl.SSLContext | bool = tls_context if tls_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        body = json.dumps({"to": message.to, "body": message.text}, separators=(",", ":")).encode()
        headers = self._headers(body, idempotency_key)
        session = self._session or self._connect()
        try:
            # A redirected POST is a misconfigured URL, not a send: the 3xx is the answer.
            async with session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status, answer = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Refused, reset, timed out, TLS failed.
            raise ProviderUnavailable(
                self.name, f"cannot reach the webhook: {type(exc).__name__}"
            ) from None
        if not 200 <= status < 300:
            detail = answer.decode("utf-8", errors="replace")
            raise refusal_for_status(self.name, status, detail, message)
        return Receipt(self.name, _reference(answer))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _connect(self) -> aiohttp.ClientSession:
        """The session and its connection pool, made on first use (an aiohttp session belongs
        to the event loop that runs the sends) and shared by every concurrent send."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._tls, limit=MAX_CONNECTIONS),
            timeout=self._timeout,
        )
        return self._session

    def _headers(self, body: bytes, idempotency_key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: idempotency_key}
        if self._secret is not None:
            timestamp = str(int(self._clock.now().timestamp()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self._secret, timestamp, body)
        return headers


def _reference(answer: bytes) -> str | None:
    """The receiver's id for the message, when it answers JSON with an ``id``."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        return None
    reference = parsed.get("id") if isinstance(parsed, dict) else None
    return str(reference) if reference is not None else None

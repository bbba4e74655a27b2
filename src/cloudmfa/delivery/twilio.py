"""SMS through Twilio's Messages API, with the official ``twilio`` client and its asynchronous
(aiohttp) HTTP client.

``CLOUDMFA_TWILIO_API_BASE_URL`` replaces the address of the API (a private gateway, or a test
peer); the client's own ``api.base_url`` is the documented place for it. Twilio's Messages API
takes no idempotency key: a retry after a lost answer may send a second SMS, which the outbox
keeps rare by retrying only what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from cloudmfa.delivery.base import (
    DeliveryError,
    Message,
    MessageRejected,
    ProviderUnavailable,
    Receipt,
)
from cloudmfa.delivery.failures import is_transient_status, scrub

# Twilio error codes that answer 4xx yet pass with time: a full sender queue (21611), rate
# limits (20429, 14107), a queue overflow (30001).
TRANSIENT_ERROR_CODES = frozenset({20429, 14107, 21611, 30001})


class TwilioProvider:
    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        api_base_url: str | None = None,
        timeout_s: float = 10,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("a from number or a messaging service sid is needed")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._sender: dict[str, str] = (
            {"messaging_service_sid": messaging_service_sid}
            if messaging_service_sid
            else {"from_": str(from_number)}
        )
        self._api_base_url = api_base_url.rstrip("/") if api_base_url else None
        self._timeout_s = timeout_s
        self._tls_context = tls_context or ssl.create_default_context()
        self._client: Client | None = None
        self._http: AsyncTwilioHttpClient | None = None

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        client = self._client or self._connect()
        try:
            async with asyncio.timeout(self._timeout_s):
                sent = await client.messages.create_async(
                    to=message.to, body=message.text, **self._sender
                )
        except TwilioRestException as exc:
            raise self._refusal(exc, message) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderUnavailable(
                self.name, f"cannot reach the Twilio API: {type(exc).__name__}"
            ) from None
        except TwilioException as exc:  # an answer the client could not read
            raise ProviderUnavailable(self.name, scrub(str(exc), message)) from None
        return Receipt(self.name, sent.sid)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http, self._client = None, None

    def _connect(self) -> Client:
        """The client and its connection pool, made on first use: an aiohttp session belongs
        to the event loop that runs the sends."""
        http = AsyncTwilioHttpClient(pool_connections=False)
        http.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._tls_context, limit=64)
        )
        client = Client(self._account_sid, self._auth_token, http_client=http)
        if self._api_base_url:
            client.api.base_url = self._api_base_url
        self._http, self._client = http, client
        return client

    def _refusal(self, exc: TwilioRestException, message: Message) -> DeliveryError:
        reason = f"HTTP {exc.status}" + (f" error {exc.code}" if exc.code else "")
        detail: Any = exc.msg
        if detail:
            reason += f": {scrub(str(detail), message)}"
        if is_transient_status(exc.status) or exc.code in TRANSIENT_ERROR_CODES:
            return ProviderUnavailable(self.name, reason)
        return MessageRejected(self.name, reason)

"""Email and SMS through Azure Communication Services, with the official SDKs'
asynchronous clients (``azure-communication-email``, ``azure-communication-sms``).

Both authenticate with the resource's connection string
(``endpoint=https://<resource>.communication.azure.com/;accesskey=<base64 key>``), which signs
each request with HMAC-SHA256. The SDKs retry nothing here (``retry_total=0``): the chain moves on
at once and the outbox retries later. Each client runs on an aiohttp session of its own that
trusts ``CLOUDMFA_DELIVERY_CA_FILE`` besides the system's CAs, made on first use because a
session belongs to the event loop that runs the sends.

Idempotency: an email is sent with an ``Operation-Id`` derived from the idempotency key, which
the email service uses to recognise a repeated request. The SMS SDK (1.1) makes the repeatability
id of each recipient itself (a random UUID and the time of the call) and offers no parameter for
it, so an SMS is sent with no key of ours.
"""

from __future__ import annotations

import ssl
import uuid
from typing import Any

from cloudmfa.delivery.base import (
    DeliveryError,
    Message,
    MessageRejected,
    ProviderUnavailable,
    Receipt,
)
from cloudmfa.delivery.failures import is_transient_status, refusal_for_status, scrub

# A fixed namespace, so that one idempotency key always gives the same operation id.
_OPERATION_NAMESPACE = uuid.UUID("6f7c4f0e-2a53-4d52-9a43-4f3b6f0b8c21")


def operation_id(idempotency_key: str) -> str:
    return str(uuid.uuid5(_OPERATION_NAMESPACE, idempotency_key))


def parse_connection_string(value: str) -> tuple[str, str]:
    """The endpoint and access key, or ValueError saying what the form is."""
    parts = {}
    for element in value.split(";"):
        key, _, item = element.strip().partition("=")
        parts[key.lower()] = item
    endpoint, key = parts.get("endpoint", ""), parts.get("accesskey", "")
    if not endpoint.startswith("https://") or not key:
        raise ValueError(
            "must look like endpoint=https://<resource>.communication.azure.com/;"
            "accesskey=<base64 key>"
        )
    return endpoint, key


class _AzureClient:
    """What both providers share: the connection string, the transport, failure rules."""

    name: str

    def __init__(
        self,
        *,
        connection_string: str,
        sender: str,
        timeout_s: float = 10,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parse_connection_string(connection_string)
        self._connection_string = connection_string
        self.sender = sender
        self._timeout_s = timeout_s
        self._tls_context = tls_context or ssl.create_default_context()
        self._session: Any = None
        self._client: Any = None  # the SDK's client, made on first use

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client_options(self) -> dict[str, Any]:
        import aiohttp
        from azure.core.pipeline.transport import AioHttpTransport

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._tls_context, limit=64)
        )
        return {
            "transport": AioHttpTransport(session=self._session, session_owner=False),
            "retry_total": 0,
            "connection_timeout": self._timeout_s,
            "read_timeout": self._timeout_s,
        }

    def _refusal(self, exc: Exception, message: Message) -> DeliveryError:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError

        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            error = getattr(exc, "error", None)
            code = getattr(error, "code", None)
            detail = f"{code}: {error.message}" if error is not None else exc.reason or ""
            return refusal_for_status(self.name, exc.status_code, str(detail), message)
        if isinstance(exc, ServiceRequestError):  # the request never reached the service
            return ProviderUnavailable(
                self.name, f"cannot reach Azure: {scrub(str(exc.message), message)}"
            )
        return ProviderUnavailable(self.name, f"{type(exc).__name__}: {scrub(str(exc), message)}")


class AzureEmailProvider(_AzureClient):
    name = "azure"

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        from azure.core.exceptions import AzureError

        content = {"subject": message.subject, "plainText": message.text}
        if message.html is not None:
            content["html"] = message.html
        email = {
            "senderAddress": self.sender,
            "recipients": {"to": [{"address": message.to}]},
            "content": content,
        }
        operation = operation_id(idempotency_key)
        try:
            # Accepted (202) is taken: waiting for the operation's end would hold a worker for
            # as long as the service queues the message.
            await self._connected().begin_send(email, operation_id=operation, polling=False)
        except AzureError as exc:
            raise self._refusal(exc, message) from None
        return Receipt(self.name, operation)

    def _connected(self) -> Any:
        if self._client is None:
            from azure.communication.email.aio import EmailClient

            self._client = EmailClient.from_connection_string(
                self._connection_string, **self._client_options()
            )
        return self._client


class AzureSmsProvider(_AzureClient):
    name = "azure"

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        from azure.core.exceptions import AzureError

        try:
            results = await self._connected().send(
                from_=self.sender, to=[message.to], message=message.text
            )
        except AzureError as exc:
            raise self._refusal(exc, message) from None
        result = results[0]
        if not result.successful:  # the request was taken, this recipient was not
            status = int(result.http_status_code or 400)
            reason = f"HTTP {status}: {scrub(str(result.error_message or ''), message)}"
            if is_transient_status(status):
                raise ProviderUnavailable(self.name, reason)
            raise MessageRejected(self.name, reason)
        return Receipt(self.name, result.message_id)

    def _connected(self) -> Any:
        if self._client is None:
            from azure.communication.sms.aio import SmsClient

            self._client = SmsClient.from_connection_string(
                self._connection_string, **self._client_options()
            )
        return self._client

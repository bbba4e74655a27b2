"""Email through an SMTP relay (aiosmtplib): plain, STARTTLS or implicit TLS, with optional
authentication.

One connection per message: a send against a local relay costs a few milliseconds
(docs/delivery.md has the figure), a pool would have to notice connections the relay dropped,
and a fresh connection never carries one message's failure into the next.
"""

from __future__ import annotations

import ssl
from typing import Literal

import aiosmtplib

from cloudmfa.delivery.base import (
    DeliveryError,
    Message,
    MessageRejected,
    ProviderUnavailable,
    Receipt,
)
from cloudmfa.delivery.failures import scrub
from cloudmfa.delivery.mail import compose, message_id

Security = Literal["none", "starttls", "tls"]
DEFAULT_PORTS: dict[Security, int] = {"none": 25, "starttls": 587, "tls": 465}
# Refused, timed out or dropped: the relay may answer later.
_UNREACHABLE = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPServerDisconnected,
)


class SmtpProvider:
    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int | None,
        security: Security,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.security = security
        self.sender = sender
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.tls_context = tls_context or ssl.create_default_context()

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        email = compose(message, sender=self.sender, idempotency_key=idempotency_key)
        try:
            await aiosmtplib.send(
                email,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.security == "tls",
                # STARTTLS is required when asked for, never attempted with "none".
                start_tls=self.security == "starttls",
                tls_context=self.tls_context if self.security != "none" else None,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPException as exc:
            raise self._refusal(exc, message) from None
        except ssl.SSLError as exc:
            raise self._tls_refusal(exc) from None
        except (OSError, TimeoutError) as exc:
            raise ProviderUnavailable(self.name, f"cannot reach {self._where}: {exc}") from None
        return Receipt(self.name, message_id(idempotency_key, self.sender))

    async def aclose(self) -> None:
        return None  # nothing is kept open between messages

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _refusal(self, exc: aiosmtplib.SMTPException, message: Message) -> DeliveryError:
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            reply = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            refusal = ProviderUnavailable if all(400 <= c < 500 for c in codes) else MessageRejected
            return refusal(self.name, f"recipient refused: {scrub(reply, message)}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            reason = f"{exc.code} {scrub(exc.message, message)}"
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                reason = f"authentication failed: {reason}"
            if 400 <= exc.code < 500:  # "try again later", RFC 5321 4.2.1
                return ProviderUnavailable(self.name, reason)
            return MessageRejected(self.name, reason)
        tls_error = _ssl_cause(exc)
        if tls_error is not None:
            return self._tls_refusal(tls_error)
        if isinstance(exc, _UNREACHABLE):
            return ProviderUnavailable(self.name, f"cannot reach {self._where}: {exc.message}")
        # What is left is the relay not doing what this configuration requires (no STARTTLS,
        # no AUTH): a setting to change, not a moment to wait for.
        return MessageRejected(self.name, f"{self._where}: {exc.message}")

    def _tls_refusal(self, exc: ssl.SSLError) -> DeliveryError:
        # An untrusted certificate counts as the relay being out of reach, as it does for the
        # HTTP providers: the code is never sent over it, and the next provider is tried.
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = f"certificate not trusted: {exc.verify_message}"
        else:
            why = f"TLS failed: {exc.reason or exc}"
        return ProviderUnavailable(self.name, f"{self._where}: {why}")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None

"""An SMTP sink (aiosmtpd) on 127.0.0.1 that keeps every message it takes: plain, with STARTTLS
(offered, or required), or with implicit TLS, optionally asking for AUTH. ``refuse_recipients``
makes it answer RCPT with a given reply (a 550 for a definitive refusal, a 451 for a transient
one)."""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from peers.http import free_port


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.sink.rcpt_reply is not None:
            return self.sink.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.sink.lock:
            self.sink.messages.append(parsed)
            self.sink.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            self.sink.tls_used.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(
        self,
        *,
        starttls: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.tls_used: list[bool] = []
        self.rcpt_reply: str | None = None
        self.lock = threading.Lock()
        self.port = free_port()  # aiosmtpd's readiness check fails with port=0
        self._login = login
        options: dict[str, Any] = {}
        if starttls is not None:
            options.update(tls_context=starttls, require_starttls=require_starttls)
        if implicit_tls is not None:
            options["ssl_context"] = implicit_tls
        if login is not None:
            options.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=starttls is not None or implicit_tls is not None,
            )
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **options
        )

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self._login is not None:
            user, password = self._login
            if auth_data.login == user.encode() and auth_data.password == password.encode():
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def refuse_recipients(self, reply: str) -> None:
        self.rcpt_reply = reply

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.envelopes.clear()
            self.tls_used.clear()
        self.rcpt_reply = None

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

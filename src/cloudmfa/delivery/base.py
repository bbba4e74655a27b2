"""A message for a user, the outbox that takes it, and the providers that deliver it.

Factor types never send: a challenge returns the message (factors/base.py ``SendMessage``) and
the flow hands it to the outbox inside the transaction that records it, so a message is handed
over exactly when its audit event commits. Delivery then happens off the request path: the
outbox's dispatcher (in-process, or `cloudmfa worker`) gives each message to its channel's
provider chain, which tries the configured providers in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.audit import AuditEvent

Channel = Literal["sms", "email"]


@dataclass(frozen=True, slots=True)
class Message:
    channel: Channel
    to: str  # an E.164 number or an email address
    subject: str
    text: str
    html: str | None = None

    def __repr__(self) -> str:
        # Its text holds a code: a message must never reach a log through its repr.
        return f"Message(channel={self.channel!r}, to=<hidden>, subject={self.subject!r})"


class Outbox(Protocol):
    async def submit(
        self,
        conn: AsyncConnection,
        message: Message,
        *,
        user_id: str | None = None,
        binding: str | None = None,
    ) -> str:
        """Take a message for delivery as part of the caller's transaction; its id.
        ``user_id`` is the subject of its audit events; ``binding`` what a definitive failure
        is reported to (delivery/outbox.py ``binding_for_attempt``, ``binding_for_enrolment``)."""
        ...

    async def submit_with_events(
        self,
        message: Message,
        events: Sequence[AuditEvent],
        *,
        user_id: str | None = None,
        binding: str | None = None,
    ) -> str:
        """``submit`` in a write of its own together with the audit ``events`` that record
        the message, all or nothing (one statement where the database allows): for a flow
        that writes nothing else. Its id; ``dispatch`` it after."""
        ...

    async def dispatch(self, *ids: str) -> None:
        """After the caller's transaction committed: start delivering these messages (a
        message never handed over is found by the sweeper, later)."""
        ...

    async def failed_for(self, binding: str) -> bool:
        """Whether the newest message for ``binding`` failed for good."""
        ...


# --- providers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A provider took the message."""

    provider: str  # the configured name: "smtp", "aws-ses", "twilio", ...
    reference: str | None = None  # the provider's own message id, when it gives one


class DeliveryError(Exception):
    """A provider did not take the message. ``reason`` is safe to log and audit: it never holds
    the message's text."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason


class ProviderUnavailable(DeliveryError):
    """Transient: the provider could not be reached, timed out, throttled us or failed on its
    side (5xx). The next provider of the chain is tried now; the message is retried later."""


class MessageRejected(DeliveryError):
    """Definitive: this provider will never take this message as it is (an invalid or
    unreachable destination, an unverified sender, bad credentials). Retrying it is useless."""


class Provider(Protocol):
    name: str  # as configured: "smtp", "aws-ses", "azure", "console", "aws-sns", "twilio", ...

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        """Hand one message to the provider. ``idempotency_key`` is the same for every retry of
        one message; a provider that supports idempotent requests passes it on. Raises
        ProviderUnavailable or MessageRejected."""
        ...

    async def aclose(self) -> None:
        """Release connections and clients."""
        ...

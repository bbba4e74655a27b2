"""A message for a user and the outbox that takes it.

Factor types never send: a challenge returns the message (factors/base.py ``SendMessage``) and
the flow hands it to the outbox inside the transaction that records it, so a message is handed
over exactly when its audit event commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class Message:
    channel: Literal["sms", "email"]
    to: str  # an E.164 number or an email address
    subject: str
    text: str
    html: str | None = None

    def __repr__(self) -> str:
        # Its text holds a code: a message must never reach a log through its repr.
        return f"Message(channel={self.channel!r}, to=<hidden>, subject={self.subject!r})"


class Outbox(Protocol):
    async def submit(self, conn: AsyncConnection, message: Message) -> None:
        """Take a message for delivery as part of the caller's transaction."""
        ...

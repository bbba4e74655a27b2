"""Development delivery: messages are written to the server log, with a loud warning.

The zero-configuration provider of both channels, so that codes by SMS and email can be tried on
one machine. It never refuses a message.
"""

from __future__ import annotations

import logging

from cloudmfa.delivery.base import Message, Receipt

log = logging.getLogger("cloudmfa.delivery")


class ConsoleProvider:
    name = "console"

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        log.warning(
            "DEVELOPMENT ONLY, NOT DELIVERED: %s message %s to %s: %s",
            message.channel,
            idempotency_key,
            message.to,
            message.text,
        )
        return Receipt(self.name, idempotency_key)

    async def aclose(self) -> None:
        return None

"""Development delivery: messages are written to the server log, with a loud warning.

The zero-configuration default, so that codes by SMS and email can be tried on one machine.
It sends at once, inside the caller's transaction; a real provider goes through a worker.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.delivery.base import Message

log = logging.getLogger("cloudmfa.delivery")


class ConsoleOutbox:
    async def submit(self, conn: AsyncConnection, message: Message) -> None:
        log.warning(
            "DEVELOPMENT ONLY, NOT DELIVERED: %s message to %s: %s",
            message.channel,
            message.to,
            message.text,
        )

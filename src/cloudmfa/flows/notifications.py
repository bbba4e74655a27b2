"""Security notices (issue 13 part 5): when a factor is added or removed, the password is
changed or reset, or recovery codes are made anew, the account's own address is told, so that
someone who took over a session cannot quietly change how the account is protected.

A notice is handed to the outbox in the transaction that makes the change, as codes are: it
goes out exactly when the change commits. It says what happened, never a secret, and carries no
link (a notice is what phishing mail imitates). Notices are not counted against the
per-destination limit: each follows a change that only a signed-in, stepped-up user (or a reset
link) can make, and a limit that swallowed one would hide the change it reports.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.delivery.base import Outbox
from cloudmfa.delivery.templates import NOTICES, security_notice
from cloudmfa.flows.deps import Configured


class Notifying(Configured, Protocol):
    @property
    def outbox(self) -> Outbox: ...


async def notify(
    conn: AsyncConnection,
    svc: Notifying,
    *,
    to: str,
    kind: str,
    user_id: str,
    detail: str = "",
) -> str:
    """Hand the notice ``kind`` (one of ``NOTICES``) for ``to`` to the outbox, in ``conn``'s
    transaction; its message id, for the caller to dispatch once the transaction commits."""
    assert kind in NOTICES, kind
    message = security_notice(to=to, service=svc.settings.issuer, kind=kind, detail=detail)
    return await svc.outbox.submit(conn, message, user_id=user_id)

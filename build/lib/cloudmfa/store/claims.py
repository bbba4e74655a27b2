"""Claims: the single conditional write that makes a verified proof single use.

A factor type checks a proof without writing anything and names what must be spent for it to
count: a TOTP time step (RFC 6238 §5.2: a code is accepted at most once), a recovery code, a
WebAuthn signature count. A claim is that spending, as a conditional ``UPDATE`` that matches a
row only while the proof is still unspent. Whoever completes the operation applies it with its
own writes (a sign-in with its session, an activation with the status change): of parallel
requests spending the same thing exactly one finds the row still matching.

The store applies any claim the same way (``apply``, and store/sign_in.py), so a factor type
brings its own claim class without this module knowing it: the ones here serve every type
that keeps its state in the ``factors`` row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Update, bindparam, exists, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import factors, users


class Claim(Protocol):
    """What a proof spends. The statement is built once per claim class, with bind parameters
    (building a statement costs more CPU than running it); each claim gives the values."""

    @staticmethod
    def template() -> Update:
        """A conditional UPDATE (no RETURNING) that spends the proof: once spent it matches no
        row. Its bind parameters start with ``claim_``; ``claim_now`` is the time of use."""
        ...

    def params(self) -> dict[str, Any]:
        """Values for the template's bind parameters, but ``claim_now``."""
        ...


@dataclass(frozen=True, slots=True)
class AdvanceCounter:
    """Move a factor's counter forward to ``value``, only if it is ahead of every value used
    before (TOTP: the time step; WebAuthn: the signature count)."""

    factor_id: str
    value: int

    @staticmethod
    def template() -> Update:
        return (
            update(factors)
            .where(
                factors.c.id == bindparam("claim_factor_id"),
                or_(factors.c.counter.is_(None), factors.c.counter < bindparam("claim_value")),
            )
            .values(counter=bindparam("claim_value"), last_used_at=bindparam("claim_now"))
        )

    def params(self) -> dict[str, Any]:
        return {"claim_factor_id": self.factor_id, "claim_value": self.value}


@dataclass(frozen=True, slots=True)
class UseFactor:
    """Nothing to spend in the row (the challenge the proof answered was single use already):
    the factor must still exist, and its last use is recorded."""

    factor_id: str

    @staticmethod
    def template() -> Update:
        return (
            update(factors)
            .where(factors.c.id == bindparam("claim_factor_id"))
            .values(last_used_at=bindparam("claim_now"))
        )

    def params(self) -> dict[str, Any]:
        return {"claim_factor_id": self.factor_id}


@functools.cache
def runnable(claim_type: type[Claim]) -> Update:
    """The claim as the store runs it: for an unlocked account only (locking ends pending
    sign-ins), saying whether it matched. Built once per claim class."""
    unlocked = exists(
        select(users.c.id).where(
            users.c.id == bindparam("claim_user_id"), users.c.locked_at.is_(None)
        )
    )
    return claim_type.template().where(unlocked).returning(literal_column("1").label("spent"))


def bound(claim: Claim, *, user_id: str, now: datetime) -> dict[str, Any]:
    """The values of ``runnable(type(claim))``."""
    return {**claim.params(), "claim_user_id": user_id, "claim_now": now}


async def apply(conn: AsyncConnection, claim: Claim, *, user_id: str, now: datetime) -> bool:
    """Apply a claim in the caller's transaction; False when it was already spent (or the
    account is locked)."""
    result = await conn.execute(runnable(type(claim)), bound(claim, user_id=user_id, now=now))
    return result.first() is not None

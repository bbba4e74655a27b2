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

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import ColumnElement, Update, exists, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import factors, users


class Claim(Protocol):
    def statement(self, now: datetime) -> Update:
        """A conditional UPDATE (no RETURNING) that spends the proof: once spent it matches
        no row."""
        ...


@dataclass(frozen=True, slots=True)
class AdvanceCounter:
    """Move a factor's counter forward to ``value``, only if it is ahead of every value used
    before (TOTP: the time step; WebAuthn: the signature count)."""

    factor_id: str
    value: int

    def statement(self, now: datetime) -> Update:
        return (
            update(factors)
            .where(
                factors.c.id == self.factor_id,
                or_(factors.c.counter.is_(None), factors.c.counter < self.value),
            )
            .values(counter=self.value, last_used_at=now)
        )


@dataclass(frozen=True, slots=True)
class UseFactor:
    """Nothing to spend in the row (the challenge the proof answered was single use already):
    the factor must still exist, and its last use is recorded."""

    factor_id: str

    def statement(self, now: datetime) -> Update:
        return update(factors).where(factors.c.id == self.factor_id).values(last_used_at=now)


def user_unlocked(user_id: str) -> ColumnElement[bool]:
    """A claim made for a locked account spends nothing: locking ends pending sign-ins."""
    return exists(select(users.c.id).where(users.c.id == user_id, users.c.locked_at.is_(None)))


def claim_statement(claim: Claim, *, user_id: str, now: datetime) -> Update:
    """The claim as the store runs it: for an unlocked account only, saying whether it matched."""
    return (
        claim.statement(now)
        .where(user_unlocked(user_id))
        .returning(literal_column("1").label("spent"))
    )


async def apply(conn: AsyncConnection, claim: Claim, *, user_id: str, now: datetime) -> bool:
    """Apply a claim in the caller's transaction; False when it was already spent (or the
    account is locked)."""
    result = await conn.execute(claim_statement(claim, user_id=user_id, now=now))
    return result.first() is not None

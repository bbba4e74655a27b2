"""Claims: the single conditional write that makes a verified proof single use.

A factor module checks a proof without writing anything and names what must be spent for it
to count: a TOTP time step (RFC 6238 §5.2: a code is accepted at most once), a recovery code.
Whoever completes the operation applies the claim atomically with its own writes (a sign-in
with its session, an activation with the status change), and of parallel requests spending the
same thing exactly one finds the row still matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store import factors as factor_repo
from cloudmfa.store import recovery_codes as code_repo


@dataclass(frozen=True, slots=True)
class TimeStepClaim:
    """Mark a TOTP time step used, only if it is later than every step used before."""

    factor_id: str
    step: int


@dataclass(frozen=True, slots=True)
class RecoveryCodeClaim:
    """Mark one of the user's unused recovery codes used."""

    user_id: str
    code_hash: str


Claim = TimeStepClaim | RecoveryCodeClaim


async def apply(conn: AsyncConnection, claim: Claim, now: datetime) -> bool:
    """Apply a claim in the caller's transaction; False when it was already spent."""
    match claim:
        case TimeStepClaim(factor_id=factor_id, step=step):
            return await factor_repo.claim_time_step(conn, factor_id, step, now)
        case RecoveryCodeClaim(user_id=user_id, code_hash=code_hash):
            return await code_repo.redeem(conn, user_id, code_hash, now)
        case _:
            assert_never(claim)

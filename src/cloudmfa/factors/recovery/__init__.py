"""Recovery codes as a backup factor: offered at login while unused codes remain and another
factor is active; issued with the first factor, replaced on request, gone with the last factor."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.base import (
    CodeProof,
    CodeProofKind,
    FactorDeps,
    LoginAttempt,
    OfferedFactor,
    PreparedSet,
    Verified,
)
from cloudmfa.factors.recovery import codes
from cloudmfa.store import recovery_codes as code_repo
from cloudmfa.store.claims import Claim
from cloudmfa.store.recovery_codes import (
    NewRecoveryCode,
    SpendLegacyRecoveryCode,
    SpendRecoveryCode,
)

_INVALID = "The code is not valid."


class RecoveryCodes:
    type: ClassVar[str] = "recovery"
    factor_id: ClassVar[str] = "recovery"
    proof: ClassVar[CodeProofKind] = CodeProof

    def __init__(self, deps: FactorDeps) -> None:
        self._deps = deps

    def left_column(self, user_id: ColumnElement[str]) -> ColumnElement[int]:
        return code_repo.unused_count(user_id)

    def offered_with(self, left: int) -> OfferedFactor | None:
        if left == 0:
            return None
        return OfferedFactor(id=self.factor_id, type=self.type, label="Recovery code")

    async def verify(self, user_id: str, proof: CodeProof, attempt: LoginAttempt) -> Verified:
        claim = await self._claim_for(user_id, codes.normalise(proof.code))
        return Verified(amr=("rec",), claim=claim, audit_events=("recovery_code.used",))

    async def _claim_for(self, user_id: str, typed: str) -> Claim:
        lookup = codes.lookup_of(typed)
        if lookup is not None:
            async with self._deps.reader.connect() as conn:
                candidates = await code_repo.unused_by_lookup(conn, user_id, lookup)
            # A set's lookups differ, so this is one hash; a used code is no candidate.
            for candidate in candidates:
                if (await self._deps.hashing.verify(candidate.code_hash, typed)).ok:
                    return SpendRecoveryCode(candidate.id)
            raise InvalidCode(_INVALID)
        if len(typed) == codes.LEGACY_CODE_LENGTH:
            # Whether it exists and is unused is decided by the claim: spending it is the check.
            return SpendLegacyRecoveryCode(user_id, codes.legacy_hash(typed))
        raise InvalidCode(_INVALID)

    async def prepare(self) -> PreparedSet:
        shown = codes.new_set()
        typed = [codes.normalise(code) for code in shown]
        # On the hashing pool side by side: ten argon2id hashes take the time of a few.
        hashes = await asyncio.gather(*(self._deps.hashing.hash(t) for t in typed))
        stored = [
            NewRecoveryCode(t[: codes.LOOKUP_LENGTH], h) for t, h in zip(typed, hashes, strict=True)
        ]
        return PreparedSet(shown=shown, stored=stored)

    async def store(self, conn: AsyncConnection, user_id: str, prepared: PreparedSet) -> None:
        await code_repo.replace_set(conn, user_id, prepared.stored, self._deps.clock.now())

    async def discard(self, conn: AsyncConnection, user_id: str) -> None:
        await code_repo.delete_all(conn, user_id)

"""Recovery codes as a second factor: offered at login while unused codes remain."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.base import FactorEnv, FactorOption, Proof, proof_code
from cloudmfa.factors.recovery.codes import hash_code, new_set
from cloudmfa.store import recovery_codes as code_repo
from cloudmfa.store.claims import RecoveryCodeClaim


class RecoveryCodes:
    type: ClassVar[str] = "recovery"
    factor_id: ClassVar[str] = "recovery"

    async def offered(self, conn: AsyncConnection, user_id: str) -> FactorOption | None:
        if await code_repo.count_unused(conn, user_id) == 0:
            return None
        return FactorOption(id=self.factor_id, type=self.type, label="Recovery code")

    async def verify(self, env: FactorEnv, user_id: str, proof: dict[str, Any]) -> Proof:
        code = proof_code(proof)
        if not code or len(code) > 64:
            raise InvalidCode("The code is not valid.")
        # Whether the code exists and is unused is decided by the claim: spending it is the
        # check, so a wrong code and a used one fail alike, and only once.
        return Proof(amr=("rec",), claim=RecoveryCodeClaim(user_id, hash_code(code)))

    async def issue(self, conn: AsyncConnection, env: FactorEnv, user_id: str) -> list[str]:
        """A new set, replacing the old one; the codes are shown once and kept only as hashes."""
        codes = new_set()
        await code_repo.replace_set(conn, user_id, [hash_code(c) for c in codes], env.clock.now())
        return codes

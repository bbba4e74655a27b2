"""Authenticator apps (TOTP, RFC 6238)."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.errors import InvalidCode, ValidationFailed
from cloudmfa.factors.base import (
    Challenge,
    Enrolment,
    FactorEnv,
    FactorOption,
    Proof,
    StoredFactor,
    UserRef,
    proof_code,
)
from cloudmfa.factors.totp.enrol import new_secret, otpauth_uri, qr_svg
from cloudmfa.factors.totp.verify import TotpParameters, verify_totp_code
from cloudmfa.store.claims import Claim, TimeStepClaim


class TotpFactor:
    type: ClassVar[str] = "totp"
    # The claim spends the time step only if the factor still exists and the step is newer
    # than its last one, so a snapshot's stale last step lets no replay through.
    verifies_from_snapshot: ClassVar[bool] = True

    def __init__(self, params: TotpParameters | None = None) -> None:
        self.params = params or TotpParameters()

    async def enrol(
        self, env: FactorEnv, *, user: UserRef, factor_id: str, params: dict[str, Any]
    ) -> Enrolment:
        label = params.get("label") or "Authenticator app"
        if not isinstance(label, str):
            raise ValidationFailed("label: must be a string")
        secret = new_secret()
        uri = otpauth_uri(secret=secret, issuer=env.issuer, account=user.email, params=self.params)
        return Enrolment(
            label=label,
            secret=secret.encode("ascii"),
            data={
                "algorithm": self.params.algorithm,
                "digits": self.params.digits,
                "period": self.params.period,
            },
            response={"secret": secret, "otpauth_uri": uri, "qr_svg": qr_svg(uri)},
        )

    async def activate(self, env: FactorEnv, factor: StoredFactor, proof: dict[str, Any]) -> Claim:
        # The activation code is spent like a login code, so it cannot be replayed later.
        return (await self.verify(env, factor, proof)).claim

    async def challenge(
        self, conn: AsyncConnection, env: FactorEnv, factor: StoredFactor
    ) -> Challenge:
        return Challenge(status=200, body={})  # nothing to send: the app shows the code

    async def verify(self, env: FactorEnv, factor: StoredFactor, proof: dict[str, Any]) -> Proof:
        if factor.secret is None:
            raise InvalidCode("The code is not valid.")
        secret = env.secretbox.decrypt(factor.secret, context=factor.id).decode("ascii")
        now = env.clock.now()
        matched = verify_totp_code(
            secret_base32=secret,
            code=proof_code(proof),
            unix_time=now.timestamp(),
            params=_stored_parameters(factor),
            last_used_step=factor.last_used_step,
        )
        # Spending the step (RFC 6238 §5.2) is the claim: a parallel request with the same
        # code then finds it taken, and the code is refused.
        return Proof(amr=("otp",), claim=TimeStepClaim(factor.id, matched.step))

    def describe(self, factor: StoredFactor) -> FactorOption:
        return FactorOption(id=factor.id, type=self.type, label=factor.label)


def _stored_parameters(factor: StoredFactor) -> TotpParameters:
    data = factor.data
    return TotpParameters(
        algorithm=str(data.get("algorithm", "SHA1")),
        digits=int(data.get("digits", 6)),
        period=int(data.get("period", 30)),
    )

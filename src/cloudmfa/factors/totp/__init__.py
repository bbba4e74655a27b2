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
from cloudmfa.store import factors as factor_repo


class TotpFactor:
    type: ClassVar[str] = "totp"

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

    async def activate(
        self, conn: AsyncConnection, env: FactorEnv, factor: StoredFactor, proof: dict[str, Any]
    ) -> None:
        # The activation code is consumed like a login code, so it cannot be replayed later.
        await self.verify(conn, env, factor, proof)

    async def challenge(
        self, conn: AsyncConnection, env: FactorEnv, factor: StoredFactor
    ) -> Challenge:
        return Challenge(status=200, body={})  # nothing to send: the app shows the code

    async def verify(
        self, conn: AsyncConnection, env: FactorEnv, factor: StoredFactor, proof: dict[str, Any]
    ) -> Proof:
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
        if not await factor_repo.claim_time_step(conn, factor.id, matched.step, now):
            raise InvalidCode("The code is not valid.")  # used a moment ago by another request
        return Proof(amr=("otp",))

    def describe(self, factor: StoredFactor) -> FactorOption:
        return FactorOption(id=factor.id, type=self.type, label=factor.label)


def _stored_parameters(factor: StoredFactor) -> TotpParameters:
    data = factor.data
    return TotpParameters(
        algorithm=str(data.get("algorithm", "SHA1")),
        digits=int(data.get("digits", 6)),
        period=int(data.get("period", 30)),
    )

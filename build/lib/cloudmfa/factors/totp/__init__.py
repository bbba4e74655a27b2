"""Authenticator apps (TOTP, RFC 6238)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.base import (
    Activation,
    Challenge,
    CodeProof,
    CodeProofKind,
    Enrolment,
    EnrolParams,
    FactorDeps,
    LoginAttempt,
    NothingToSend,
    OfferedFactor,
    ParamsKind,
    StoredFactor,
    UserRef,
    Verified,
)
from cloudmfa.factors.totp.enrol import new_secret, otpauth_uri, qr_svg
from cloudmfa.factors.totp.verify import TotpParameters, verify_totp_code
from cloudmfa.store.claims import AdvanceCounter

DEFAULT_LABEL = "Authenticator app"


class TotpFactor:
    type: ClassVar[str] = "totp"
    params: ClassVar[ParamsKind] = EnrolParams
    proof: ClassVar[CodeProofKind] = CodeProof
    # The claim spends the time step only if the factor still exists and the step is newer
    # than its last one, so a snapshot's stale counter lets no replay through.
    verifies_from_snapshot: ClassVar[bool] = True
    uses_challenge: ClassVar[bool] = False

    def __init__(self, deps: FactorDeps, parameters: TotpParameters) -> None:
        self._deps = deps
        self.parameters = parameters

    async def enrol(self, user: UserRef, factor_id: str, params: EnrolParams) -> Enrolment:
        secret = new_secret()
        uri = otpauth_uri(
            secret=secret, issuer=self._deps.issuer, account=user.email, params=self.parameters
        )
        return Enrolment(
            label=params.label or DEFAULT_LABEL,
            secret=secret.encode("ascii"),
            data={
                "algorithm": self.parameters.algorithm,
                "digits": self.parameters.digits,
                "period": self.parameters.period,
            },
            shown={"secret": secret, "otpauth_uri": uri, "qr_svg": qr_svg(uri)},
        )

    async def activate(
        self, factor: StoredFactor, proof: CodeProof, kept: Mapping[str, Any] | None
    ) -> Activation:
        # The activation code is spent like a login code, so it cannot be replayed later.
        return Activation(claim=self._claim(factor, proof))

    async def challenge(self, factor: StoredFactor, attempt: LoginAttempt) -> Challenge:
        return Challenge(NothingToSend())  # the app shows the code

    async def verify(
        self, factor: StoredFactor, proof: CodeProof, attempt: LoginAttempt
    ) -> Verified:
        return Verified(amr=("otp",), claim=self._claim(factor, proof))

    def _claim(self, factor: StoredFactor, proof: CodeProof) -> AdvanceCounter:
        if factor.secret is None:
            raise InvalidCode("The code is not valid.")
        secret = self._deps.secretbox.decrypt(factor.secret, context=factor.id).decode("ascii")
        matched = verify_totp_code(
            secret_base32=secret,
            code=proof.code,
            unix_time=self._deps.clock.now().timestamp(),
            params=_stored_parameters(factor),
            last_used_step=factor.counter,
        )
        # Spending the step (RFC 6238 §5.2) is the claim: a parallel request with the same
        # code then finds it taken, and the code is refused.
        return AdvanceCounter(factor.id, matched.step)

    def describe(self, factor: StoredFactor) -> OfferedFactor:
        return OfferedFactor(id=factor.id, type=self.type, label=factor.label)


def _stored_parameters(factor: StoredFactor) -> TotpParameters:
    data = factor.data
    return TotpParameters(
        algorithm=str(data.get("algorithm", "SHA1")),
        digits=int(data.get("digits", 6)),
        period=int(data.get("period", 30)),
    )

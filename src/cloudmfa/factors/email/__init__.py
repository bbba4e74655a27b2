"""Codes by email (API.md "The signed-in user and their factors", "Login").

Weaker than the other factors, and documented so: NIST SP 800-63B-4 does not accept email as
an authenticator at AAL2 (whoever reads the mailbox, often with the same password, holds the
factor). It is offered for deployments that accept that; CLOUDMFA_ENABLED_FACTORS turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import EmailStr

from cloudmfa.delivery.templates import email_code
from cloudmfa.email_address import normalise_email
from cloudmfa.factors.base import (
    Activation,
    Challenge,
    CodeProof,
    CodeProofKind,
    Enrolment,
    EnrolParams,
    FactorDeps,
    LoginAttempt,
    OfferedFactor,
    ParamsKind,
    SendMessage,
    StoredFactor,
    UserRef,
    Verified,
)
from cloudmfa.factors.codes import CODE_TTL_S, OneTimeCodes, enrolment_binding, login_binding
from cloudmfa.store.claims import UseFactor

DEFAULT_LABEL = "Email"


class EmailParams(EnrolParams):
    email: EmailStr


def email_hint(address: str) -> str:
    """API.md: "j***@example.com": the first character of the local part and the domain."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


class EmailFactor:
    type: ClassVar[str] = "email"
    params: ClassVar[ParamsKind] = EmailParams
    proof: ClassVar[CodeProofKind] = CodeProof
    verifies_from_snapshot: ClassVar[bool] = False
    uses_challenge: ClassVar[bool] = True

    def __init__(self, deps: FactorDeps, *, digits: int) -> None:
        self._deps = deps
        self._codes = OneTimeCodes(deps, digits=digits)

    def _send(self, address: str, binding: str) -> tuple[SendMessage, dict[str, Any]]:
        code, kept = self._codes.issue(binding)
        message = email_code(
            to=address, service=self._deps.issuer, code=code, minutes=self._codes.minutes
        )
        return SendMessage(message, email_hint(address), CODE_TTL_S), kept

    async def enrol(self, user: UserRef, factor_id: str, params: EmailParams) -> Enrolment:
        address = normalise_email(str(params.email))
        send, kept = self._send(address, enrolment_binding(factor_id))
        return Enrolment(
            label=params.label or DEFAULT_LABEL,
            data={"email": address},
            shown={"destination_hint": send.destination_hint},
            send=send,
            keep=kept,
        )

    async def activate(
        self, factor: StoredFactor, proof: CodeProof, kept: Mapping[str, Any] | None
    ) -> Activation:
        self._codes.check(proof.code, enrolment_binding(factor.id), kept)
        return Activation(claim=UseFactor(factor.id))

    async def challenge(self, factor: StoredFactor, attempt: LoginAttempt) -> Challenge:
        send, kept = self._send(factor.data["email"], login_binding(attempt, factor.id))
        return Challenge(send, keep=kept)

    async def verify(
        self, factor: StoredFactor, proof: CodeProof, attempt: LoginAttempt
    ) -> Verified:
        self._codes.check(proof.code, login_binding(attempt, factor.id), attempt.kept)
        return Verified(amr=("email",), claim=UseFactor(factor.id))

    def describe(self, factor: StoredFactor) -> OfferedFactor:
        return OfferedFactor(factor.id, self.type, factor.label)

"""A stub of the SMS factor's shape: a code sent by message at enrolment and at each challenge,
kept (hashed) with the enrolment or the login attempt, single use by the attempt's end."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from cloudmfa.delivery.base import Message
from cloudmfa.errors import InvalidCode
from cloudmfa.factors.base import (
    Activation,
    Challenge,
    CodeProof,
    Enrolment,
    EnrolParams,
    FactorDeps,
    LoginAttempt,
    OfferedFactor,
    SendMessage,
    StoredFactor,
    UserRef,
    Verified,
)
from cloudmfa.store.claims import UseFactor

CODE_TTL_S = 600


class PhoneParams(EnrolParams):
    phone: str = Field(pattern=r"^\+[1-9][0-9]{7,14}$")


class MessageCodeFactor:
    type: ClassVar[str] = "sms"
    params: ClassVar[type[EnrolParams]] = PhoneParams
    proof: ClassVar[type[CodeProof]] = CodeProof
    verifies_from_snapshot: ClassVar[bool] = False
    uses_challenge: ClassVar[bool] = True

    def __init__(self, deps: FactorDeps) -> None:
        self._deps = deps

    def _new_code(self, phone: str) -> tuple[SendMessage, dict[str, Any]]:
        code = f"{secrets.randbelow(10**6):06d}"
        message = Message("sms", phone, "Your code", f"{self._deps.issuer} code: {code}")
        hint = phone[:2] + "*" * (len(phone) - 6) + phone[-4:]
        expires = self._deps.clock.now().timestamp() + CODE_TTL_S
        kept = {"code_sha256": hashlib.sha256(code.encode()).hexdigest(), "expires": expires}
        return SendMessage(message, hint, CODE_TTL_S), kept

    def _check(self, code: str, kept: Mapping[str, Any] | None) -> None:
        if kept is None or self._deps.clock.now().timestamp() > kept["expires"]:
            raise InvalidCode("The code is not valid.")
        typed = hashlib.sha256(code.encode()).hexdigest()
        if not hmac.compare_digest(typed, kept["code_sha256"]):
            raise InvalidCode("The code is not valid.")

    async def enrol(self, user: UserRef, factor_id: str, params: PhoneParams) -> Enrolment:
        send, kept = self._new_code(params.phone)
        return Enrolment(
            label=params.label or "Phone",
            data={"phone": params.phone},
            shown={"destination_hint": send.destination_hint},
            send=send,
            keep=kept,
        )

    async def activate(
        self, factor: StoredFactor, proof: CodeProof, kept: Mapping[str, Any] | None
    ) -> Activation:
        self._check(proof.code, kept)
        return Activation(claim=UseFactor(factor.id))

    async def challenge(self, factor: StoredFactor, attempt: LoginAttempt) -> Challenge:
        send, kept = self._new_code(factor.data["phone"])
        return Challenge(send, keep=kept)

    async def verify(
        self, factor: StoredFactor, proof: CodeProof, attempt: LoginAttempt
    ) -> Verified:
        self._check(proof.code, attempt.kept)
        return Verified(amr=("sms",), claim=UseFactor(factor.id))

    def describe(self, factor: StoredFactor) -> OfferedFactor:
        return OfferedFactor(factor.id, self.type, factor.label)

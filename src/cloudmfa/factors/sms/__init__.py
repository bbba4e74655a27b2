"""Codes by SMS (API.md "The signed-in user and their factors", "Login").

NIST SP 800-63B-4 counts SMS as a *restricted* authenticator (a number can be ported or its
messages redirected): offered, and turned off with CLOUDMFA_ENABLED_FACTORS where a deployment
must not rely on it. The number is checked (``phone.py``) at enrolment, and again at each
challenge against the allowed countries, in case those were narrowed since.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any, ClassVar

from pydantic import Field

from cloudmfa.delivery.templates import sms_code
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
from cloudmfa.factors.codes import (
    CODE_TTL_S,
    OneTimeCodes,
    enrolment_binding,
    login_binding,
)
from cloudmfa.factors.sms.phone import Phone, check_country, parse_phone
from cloudmfa.store.claims import UseFactor

DEFAULT_LABEL = "Phone"


class PhoneParams(EnrolParams):
    phone: str = Field(min_length=1, max_length=32)


class SmsFactor:
    type: ClassVar[str] = "sms"
    params: ClassVar[ParamsKind] = PhoneParams
    proof: ClassVar[CodeProofKind] = CodeProof
    verifies_from_snapshot: ClassVar[bool] = False
    uses_challenge: ClassVar[bool] = True

    def __init__(
        self, deps: FactorDeps, *, digits: int, allowed_countries: Set[str], webotp_host: str
    ) -> None:
        self._deps = deps
        self._codes = OneTimeCodes(deps, digits=digits)
        self._allowed = frozenset(allowed_countries)
        self._host = webotp_host

    def _phone(self, text: str, *, enrolling: bool = True) -> Phone:
        phone = parse_phone(text, enrolling=enrolling)
        check_country(phone, self._allowed)
        return phone

    def _send(self, phone: Phone, binding: str) -> tuple[SendMessage, dict[str, Any]]:
        code, kept = self._codes.issue(binding)
        message = sms_code(
            to=phone.e164,
            service=self._deps.issuer,
            code=code,
            minutes=self._codes.minutes,
            host=self._host,
        )
        return SendMessage(message, phone.hint, CODE_TTL_S), kept

    async def enrol(self, user: UserRef, factor_id: str, params: PhoneParams) -> Enrolment:
        phone = self._phone(params.phone)
        send, kept = self._send(phone, enrolment_binding(factor_id))
        return Enrolment(
            label=params.label or DEFAULT_LABEL,
            data={"phone": phone.e164},
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
        phone = self._phone(factor.data["phone"], enrolling=False)  # countries may be fewer now
        send, kept = self._send(phone, login_binding(attempt, factor.id))
        return Challenge(send, keep=kept)

    async def verify(
        self, factor: StoredFactor, proof: CodeProof, attempt: LoginAttempt
    ) -> Verified:
        self._codes.check(proof.code, login_binding(attempt, factor.id), attempt.kept)
        return Verified(amr=("sms",), claim=UseFactor(factor.id))

    def describe(self, factor: StoredFactor) -> OfferedFactor:
        return OfferedFactor(factor.id, self.type, factor.label)

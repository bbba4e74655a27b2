"""A stub of the WebAuthn factor's shape: options for the browser instead of a message, a
credential stored at activation (its id as the factor's lookup key, its signature count as the
counter), challenges bound to the enrolment or the login attempt.

The "signature" is an HMAC under a key the stub authenticator shares: enough to exercise the
contract; the real factor verifies public-key signatures with py_webauthn."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.base import (
    Activation,
    Challenge,
    CredentialProof,
    Enrolment,
    EnrolParams,
    FactorDeps,
    LoginAttempt,
    OfferedFactor,
    PublicKeyRequest,
    StoredFactor,
    UserRef,
    Verified,
)
from cloudmfa.store.claims import AdvanceCounter


def sign(key: str, challenge: str, counter: int) -> str:
    """What the stub authenticator computes over a challenge (tests play the authenticator)."""
    return hmac.new(key.encode(), f"{challenge}:{counter}".encode(), hashlib.sha256).hexdigest()


class StoredCredentialFactor:
    type: ClassVar[str] = "webauthn"
    params: ClassVar[type[EnrolParams]] = EnrolParams
    proof: ClassVar[type[CredentialProof]] = CredentialProof
    verifies_from_snapshot: ClassVar[bool] = False
    uses_challenge: ClassVar[bool] = True

    def __init__(self, deps: FactorDeps) -> None:
        self._deps = deps

    @staticmethod
    def _challenge() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")

    async def enrol(self, user: UserRef, factor_id: str, params: EnrolParams) -> Enrolment:
        challenge = self._challenge()
        options = {"challenge": challenge, "user": {"id": user.id, "name": user.email}}
        return Enrolment(
            label=params.label or "Passkey", shown={"public_key": options}, keep={"c": challenge}
        )

    async def activate(
        self, factor: StoredFactor, proof: CredentialProof, kept: Mapping[str, Any] | None
    ) -> Activation:
        credential = proof.credential
        key, counter = str(credential.get("key", "")), int(credential.get("counter", 0))
        if kept is None or not hmac.compare_digest(
            sign(key, kept["c"], counter), str(credential.get("signature", ""))
        ):
            raise InvalidCode("The credential does not verify.")
        return Activation(
            claim=AdvanceCounter(factor.id, counter),
            data={"key": key},
            lookup_key=str(credential["id"]),
            counter=counter,
        )

    async def challenge(self, factor: StoredFactor, attempt: LoginAttempt) -> Challenge:
        challenge = self._challenge()
        options = {"challenge": challenge, "allowCredentials": [{"id": factor.lookup_key}]}
        return Challenge(PublicKeyRequest(options), keep={"c": challenge})

    async def verify(
        self, factor: StoredFactor, proof: CredentialProof, attempt: LoginAttempt
    ) -> Verified:
        credential = proof.credential
        counter = int(credential.get("counter", 0))
        expected = sign(factor.data["key"], attempt.kept["c"], counter) if attempt.kept else ""
        if credential.get("id") != factor.lookup_key or not hmac.compare_digest(
            expected, str(credential.get("signature", ""))
        ):
            raise InvalidCode("The credential does not verify.")
        return Verified(
            amr=("hwk", "user"),
            claim=AdvanceCounter(factor.id, counter),
            phishing_resistant=True,
            user_verified=True,
        )

    def describe(self, factor: StoredFactor) -> OfferedFactor:
        return OfferedFactor(factor.id, self.type, factor.label)

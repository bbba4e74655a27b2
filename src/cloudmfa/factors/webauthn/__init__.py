"""Passkeys and security keys (WebAuthn Level 2, with py_webauthn): a second factor, and a
sign-in on its own (passwordless) when the authenticator verified the user.

A platform authenticator's fingerprint or face check, or the device PIN, is WebAuthn *user
verification*; with it a passkey proves two factors at once (possession and the user), which
is why ``amr`` then carries ``user`` and the session counts as multi-factor.

Files by verb: ``register.py`` (creation options, checking a new credential), ``authenticate.py``
(request options, checking an assertion), ``credential.py`` (what the factor row keeps),
``relying_party.py`` (the settings), ``aaguids.py`` (authenticator names).

``register.py`` and ``authenticate.py`` are imported when first used: py_webauthn brings
pyOpenSSL and its attestation formats, about 6 MiB, which a worker that never sees a passkey
does without.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.base import (
    Activation,
    Challenge,
    CredentialProof,
    CredentialProofKind,
    Enrolment,
    EnrolParams,
    FactorDeps,
    FlaggedProof,
    LoginAttempt,
    OfferedFactor,
    ParamsKind,
    PublicKeyRequest,
    StoredFactor,
    UserRef,
    Verified,
)
from cloudmfa.factors.webauthn.aaguids import authenticator_name
from cloudmfa.factors.webauthn.credential import (
    DOES_NOT_VERIFY,
    StoredCredential,
    base64url_to_bytes,
    bytes_to_base64url,
    credential_id_of,
    lookup_key,
)
from cloudmfa.factors.webauthn.relying_party import CHALLENGE_BYTES, RelyingParty
from cloudmfa.store import factors as factor_repo
from cloudmfa.store.claims import AdvanceCounter, Claim, UseFactor, UseUncounted

DEFAULT_LABEL = "Passkey"
CLONE_DETECTED = "webauthn.clone_detected"
NO_CHALLENGE = "Ask for a challenge first; each one is used once."
TYPE = "webauthn"


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def user_handle(user_id: str) -> bytes:
    """The WebAuthn user handle (§14.6.1: no personal data): the account id's 16 bytes. The
    same for every credential of an account, so an authenticator replaces its passkey for
    the account instead of adding a second."""
    try:
        return uuid.UUID(user_id).bytes
    except ValueError:
        return user_id.encode("utf-8")


class WebAuthnFactor:
    type: ClassVar[str] = TYPE
    params: ClassVar[ParamsKind] = EnrolParams
    proof: ClassVar[CredentialProofKind] = CredentialProof
    # The login attempt may carry the factor as the password step read it: its credential
    # never changes, and the claim re-checks the signature count in the database (a count
    # moved on meanwhile makes the claim match nothing, and the assertion is refused).
    verifies_from_snapshot: ClassVar[bool] = True
    uses_challenge: ClassVar[bool] = True

    def __init__(self, deps: FactorDeps, rp: RelyingParty) -> None:
        self._deps = deps
        self.rp = rp

    # --- enrolment ------------------------------------------------------------------------

    async def enrol(self, user: UserRef, factor_id: str, params: EnrolParams) -> Enrolment:
        from cloudmfa.factors.webauthn.register import creation_options

        challenge = new_challenge()
        options = creation_options(
            self.rp,
            user_handle=user_handle(user.id),
            user_name=user.email,
            challenge=challenge,
            existing=[c for _, c in await self._credentials_of(user.id)],
        )
        return Enrolment(
            label=params.label or DEFAULT_LABEL,
            shown={"public_key": options},
            keep={"challenge": bytes_to_base64url(challenge)},
        )

    async def activate(
        self, factor: StoredFactor, proof: CredentialProof, kept: Mapping[str, Any] | None
    ) -> Activation:
        from cloudmfa.factors.webauthn.register import verify_registration

        if kept is None:
            raise InvalidCode("This enrolment has expired; start a new one.")
        stored, sign_count = verify_registration(
            self.rp, credential=proof.credential, challenge=_challenge(kept)
        )
        return Activation(
            # The enrolment's challenge is kept for this factor alone and the pending factor
            # turns active once: nothing else to spend.
            claim=UseFactor(factor.id),
            data=stored.data(),
            lookup_key=lookup_key(stored.credential_id),
            counter=sign_count,
        )

    # --- second factor --------------------------------------------------------------------

    async def challenge(self, factor: StoredFactor, attempt: LoginAttempt) -> Challenge:
        from cloudmfa.factors.webauthn.authenticate import request_options

        challenge = new_challenge()
        # API.md: allowCredentials lists every credential of the user, so the browser offers
        # whichever authenticator is at hand; verify accepts any of them.
        allowed = [c for _, c in await self._credentials_of(attempt.user_id)]
        options = request_options(
            self.rp,
            challenge=challenge,
            allowed=allowed,
            require_uv=self.rp.require_user_verification,
        )
        return Challenge(
            PublicKeyRequest(options), keep={"challenge": bytes_to_base64url(challenge)}
        )

    async def verify(
        self, factor: StoredFactor, proof: CredentialProof, attempt: LoginAttempt
    ) -> Verified:
        if attempt.kept is None:
            raise InvalidCode(NO_CHALLENGE)
        used = await self._credential_of_user(factor, proof, attempt.user_id)
        return self._check(
            used, proof, _challenge(attempt.kept), require_uv=self.rp.require_user_verification
        )

    # --- passwordless (factors/base.py PasswordlessFactor) --------------------------------

    async def passwordless_challenge(self) -> Challenge:
        from cloudmfa.factors.webauthn.authenticate import request_options

        challenge = new_challenge()
        options = request_options(self.rp, challenge=challenge, allowed=(), require_uv=True)
        return Challenge(
            PublicKeyRequest(options), keep={"challenge": bytes_to_base64url(challenge)}
        )

    def lookup_key_of(self, proof: CredentialProof) -> str:
        return lookup_key(credential_id_of(proof.credential))

    async def verify_passwordless(
        self, factor: StoredFactor, proof: CredentialProof, kept: Mapping[str, Any]
    ) -> Verified:
        # The credential was found by its id; the user handle it answers with must name the
        # same account (§7.2 step 6), so a credential can never sign in to another account.
        from cloudmfa.factors.webauthn.authenticate import user_handle_of

        handle = user_handle_of(proof.credential)
        if handle is None or handle != user_handle(factor.user_id):
            raise InvalidCode(DOES_NOT_VERIFY)
        # Passwordless is a sign-in on its own: always with user verification.
        return self._check(factor, proof, _challenge(kept), require_uv=True)

    # --- describing -----------------------------------------------------------------------

    def describe(self, factor: StoredFactor) -> OfferedFactor:
        return OfferedFactor(id=factor.id, type=self.type, label=factor.label)

    def owner_details(self, factor: StoredFactor) -> Mapping[str, Any]:
        data = factor.data
        if "credential_id" not in data:
            return {}  # pending: nothing registered yet
        return {
            "authenticator": authenticator_name(data.get("aaguid")),
            "aaguid": data.get("aaguid"),
            "backup_eligible": bool(data.get("backup_eligible")),
            "synced": bool(data.get("backed_up")),
            "transports": list(data.get("transports") or []),
        }

    # --- the common part --------------------------------------------------------------------

    def _check(
        self, factor: StoredFactor, proof: CredentialProof, challenge: bytes, *, require_uv: bool
    ) -> Verified:
        from cloudmfa.factors.webauthn.authenticate import SignCountWentBack, verify_assertion

        try:
            assertion = verify_assertion(
                self.rp,
                credential=proof.credential,
                challenge=challenge,
                stored=StoredCredential.of(factor.data),
                stored_count=factor.counter or 0,
                require_uv=require_uv,
            )
        except SignCountWentBack as exc:
            raise FlaggedProof(
                DOES_NOT_VERIFY,
                event=CLONE_DETECTED,
                details={
                    "factor_id": factor.id,
                    "stored_sign_count": exc.stored,
                    "presented_sign_count": exc.presented,
                },
            ) from None
        claim: Claim
        if assertion.sign_count == 0:
            # An authenticator that keeps no count (most synced passkeys) always says 0:
            # the single-use challenge is what makes the assertion single use.
            claim = UseUncounted(factor.id)
        else:
            claim = AdvanceCounter(factor.id, assertion.sign_count)
        return Verified(
            amr=("hwk", "user") if assertion.user_verified else ("hwk",),
            claim=claim,
            phishing_resistant=True,  # bound to the origin: acr `phr`
            user_verified=assertion.user_verified,
        )

    async def _credentials_of(self, user_id: str) -> list[tuple[StoredFactor, StoredCredential]]:
        async with self._deps.reader.connect() as conn:
            rows = await factor_repo.list_factors(conn, user_id, types=[TYPE], active_only=True)
        return [(row, StoredCredential.of(row.data)) for row in rows if "credential_id" in row.data]

    async def _credential_of_user(
        self, offered: StoredFactor, proof: CredentialProof, user_id: str
    ) -> StoredFactor:
        """The user's factor whose credential the proof names: the offered one, or another of
        the same user's (allowCredentials listed them all). Never another user's."""
        key = lookup_key(credential_id_of(proof.credential))
        if offered.lookup_key == key and offered.user_id == user_id:
            return offered
        for row, _ in await self._credentials_of(user_id):
            if row.lookup_key == key:
                return row
        raise InvalidCode(DOES_NOT_VERIFY)


def _challenge(kept: Mapping[str, Any]) -> bytes:
    value = kept.get("challenge")
    if not isinstance(value, str):
        raise InvalidCode(NO_CHALLENGE)
    return base64url_to_bytes(value)

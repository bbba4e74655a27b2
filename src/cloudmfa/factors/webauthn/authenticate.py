"""Signing in with a credential (WebAuthn §7.2): request options, then the browser's assertion
checked by py_webauthn, and the signature count's rule (§6.1.1)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webauthn import generate_authentication_options, verify_authentication_response
from webauthn.helpers import base64url_to_bytes, options_to_json_dict
from webauthn.helpers.exceptions import InvalidAuthenticationResponse
from webauthn.helpers.structs import UserVerificationRequirement

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.webauthn.credential import (
    DOES_NOT_VERIFY,
    MALFORMED,
    StoredCredential,
    credential_id_of,
)
from cloudmfa.factors.webauthn.register import descriptor
from cloudmfa.factors.webauthn.relying_party import CEREMONY_TIMEOUT_S, RelyingParty

log = logging.getLogger("cloudmfa.webauthn")


def request_options(
    rp: RelyingParty, *, challenge: bytes, allowed: Iterable[StoredCredential], require_uv: bool
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptionsJSON (§5.5). With no ``allowed`` credentials the
    browser offers the user's discoverable ones: the passwordless button, or conditional
    mediation (autofill), which needs exactly that empty list."""
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_S * 1000,
        allow_credentials=[descriptor(c) for c in allowed],
        user_verification=UserVerificationRequirement.REQUIRED
        if require_uv
        else UserVerificationRequirement.PREFERRED,
    )
    return options_to_json_dict(options)


@dataclass(frozen=True, slots=True)
class Assertion:
    sign_count: int
    user_verified: bool
    backed_up: bool


class SignCountWentBack(InvalidCode):
    """§6.1.1: a signature count at or below the stored one, once either is non-zero, means
    two copies of the credential's private key may exist (a cloned authenticator)."""

    def __init__(self, stored: int, presented: int) -> None:
        super().__init__(DOES_NOT_VERIFY)
        self.stored = stored
        self.presented = presented


def verify_assertion(
    rp: RelyingParty,
    *,
    credential: Mapping[str, Any],
    challenge: bytes,
    stored: StoredCredential,
    stored_count: int,
    require_uv: bool,
) -> Assertion:
    """The assertion's facts once its signature, challenge, origin, rp id hash and flags
    check out; InvalidCode otherwise. The signature count is compared only after the
    signature verifies, so a forged answer can never raise a clone alarm."""
    if not hmac.compare_digest(credential_id_of(credential), stored.credential_id):
        raise InvalidCode(DOES_NOT_VERIFY)
    try:
        verified = verify_authentication_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            credential_public_key=stored.public_key,
            credential_current_sign_count=0,  # compared below, after the signature
            require_user_verification=require_uv,
        )
    except InvalidAuthenticationResponse as exc:
        log.info("webauthn assertion refused: %s", exc)
        raise InvalidCode(DOES_NOT_VERIFY) from None
    except Exception as exc:
        # Malformed input reaches py_webauthn's parsers (CBOR, base64, DER signatures) and
        # comes back as their own exceptions: a bad credential, never a server error.
        log.info("webauthn assertion malformed: %s", type(exc).__name__)
        raise InvalidCode(MALFORMED) from None
    count = verified.new_sign_count
    if (count > 0 or stored_count > 0) and count <= stored_count:
        raise SignCountWentBack(stored_count, count)
    return Assertion(count, verified.user_verified, verified.credential_backed_up)


def user_handle_of(credential: Mapping[str, Any]) -> bytes | None:
    """The user handle a discoverable credential answers with (§5.2.2), if it decodes."""
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if not isinstance(handle, str) or not handle or len(handle) > 128:
        return None
    try:
        return base64url_to_bytes(handle)
    except ValueError:
        return None

"""Registering a credential (WebAuthn §7.1): creation options, then the browser's answer
checked by py_webauthn."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from webauthn import generate_registration_options, verify_registration_response
from webauthn.helpers import options_to_json_dict, parse_attestation_object
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.webauthn.credential import MALFORMED, StoredCredential, credential_id_of
from cloudmfa.factors.webauthn.relying_party import (
    CEREMONY_TIMEOUT_S,
    RelyingParty,
)

log = logging.getLogger("cloudmfa.webauthn")

# ES256, EdDSA, RS256: what platform authenticators and security keys use, in that order.
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]


def creation_options(
    rp: RelyingParty,
    *,
    user_handle: bytes,
    user_name: str,
    challenge: bytes,
    existing: Iterable[StoredCredential],
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptionsJSON (§5.4): a discoverable credential (a passkey,
    usable without a password), user verification as configured, none of ``existing`` again."""
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_handle,
        user_name=user_name,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_S * 1000,
        attestation=AttestationConveyancePreference(rp.attestation),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED
            if rp.require_user_verification
            else UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[descriptor(c) for c in existing],
        supported_pub_key_algs=ALGORITHMS,
    )
    return options_to_json_dict(options)


def descriptor(credential: StoredCredential) -> PublicKeyCredentialDescriptor:
    transports = []
    for name in credential.transports:
        try:
            transports.append(AuthenticatorTransport(name))
        except ValueError:
            continue  # a transport newer than this library: the browser finds it anyway
    return PublicKeyCredentialDescriptor(id=credential.credential_id, transports=transports or None)


def verify_registration(
    rp: RelyingParty, *, credential: Mapping[str, Any], challenge: bytes
) -> tuple[StoredCredential, int]:
    """The credential to keep and its signature count, or InvalidCode (§7.1 steps 5–26 are
    py_webauthn's; the AAGUID allow-list is ours)."""
    answered_id = credential_id_of(credential)  # a clear refusal for an answer without one
    try:
        verified = verify_registration_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_verification=rp.require_user_verification,
            supported_pub_key_algs=ALGORITHMS,
            pem_root_certs_bytes_by_fmt=rp.roots_by_format(),
        )
    except InvalidRegistrationResponse as exc:
        log.info("webauthn registration refused: %s", exc)
        raise InvalidCode("The credential does not verify.") from None
    except Exception as exc:
        # py_webauthn reports some malformed input (CBOR, base64, COSE keys) with the parser's
        # own exceptions; any of them is a bad credential, never a server error.
        log.info("webauthn registration malformed: %s", type(exc).__name__)
        raise InvalidCode(MALFORMED) from None
    if not hmac.compare_digest(answered_id, verified.credential_id):
        # py_webauthn keeps the attested id; an answer naming another one is not to be trusted
        raise InvalidCode("The credential does not verify.")
    if rp.allowed_aaguids:
        _check_attested_aaguid(rp, verified.fmt, verified.attestation_object, verified.aaguid)
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    stored = StoredCredential(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        transports=tuple(
            t for t in (transports if isinstance(transports, list) else []) if isinstance(t, str)
        )[:8],
        aaguid=verified.aaguid,
        backup_eligible=verified.credential_device_type == "multi_device",
        backed_up=verified.credential_backed_up,
    )
    return stored, verified.sign_count


def _check_attested_aaguid(
    rp: RelyingParty, fmt: AttestationFormat, attestation_object: bytes, aaguid: str
) -> None:
    """Only an authenticator on the allow-list, and only when a certificate chain (checked
    against the configured roots by py_webauthn) vouches for it: `none` and self attestation
    carry no certificate, so their AAGUID is the authenticator's own claim."""
    statement = parse_attestation_object(attestation_object).att_stmt
    if fmt == AttestationFormat.NONE or not statement.x5c:
        raise InvalidCode("This service accepts only attested authenticators of approved models.")
    if aaguid.lower() not in rp.allowed_aaguids:
        raise InvalidCode("This authenticator model is not approved here.")
    # §8.2.1: a certificate that names a model (the id-fido-gen-ce-aaguid extension) must name
    # this one, or one vendor's certificate would vouch for any of its AAGUIDs.
    try:
        leaf = x509.load_der_x509_certificate(statement.x5c[0])
        named = leaf.extensions.get_extension_for_oid(_FIDO_AAGUID).value
    except x509.ExtensionNotFound:
        return
    except ValueError:
        raise InvalidCode(MALFORMED) from None
    value = getattr(named, "value", b"")
    if value[-16:] != uuid.UUID(aaguid).bytes or len(value) != 18:
        raise InvalidCode("The attestation certificate names another authenticator model.")


_FIDO_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

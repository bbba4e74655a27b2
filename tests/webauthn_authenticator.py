"""A software WebAuthn authenticator and client for the tests (WebAuthn §6), on `cryptography`
and `cbor2`: it makes discoverable credentials (ES256 or EdDSA), answers creation and request
options as a browser would (PublicKeyCredential.toJSON()), and sets the user-verified flag.

Every knob a test needs to forge a bad answer is a keyword: another origin or rp id, flags
left out, a chosen signature count.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
ICLOUD_KEYCHAIN = "fbfc3007-154e-4ecc-8c0b-6e020557d7bd"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            raw = self.key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return cbor2.dumps({1: 1, 3: -8, -1: 6, -2: raw})
        numbers = self.key.public_key().public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y})

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(data)
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass
class SoftAuthenticator:
    origin: str = "http://localhost:8000"
    aaguid: str = ICLOUD_KEYCHAIN
    synced: bool = True  # backup eligible and backed up, as a synced passkey is
    counts: bool = True  # False: always sign count 0, as most synced passkeys do
    credentials: dict[bytes, Credential] = field(default_factory=dict)

    # --- navigator.credentials.create() -------------------------------------------------------

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int | None = None,
        eddsa: bool = False,
        challenge: str | None = None,
        again: bytes | None = None,
        attestation: tuple[ec.EllipticCurvePrivateKey, bytes] | None = None,
        self_attested: bool = False,
    ) -> dict[str, Any]:
        """A new credential, or with ``again`` the one of that id registered once more."""
        rp = rp_id or options["rp"]["id"]
        key: Any = (
            ed25519.Ed25519PrivateKey.generate()
            if eddsa
            else ec.generate_private_key(ec.SECP256R1())
        )
        credential = Credential(
            id=secrets.token_bytes(32),
            key=key,
            rp_id=rp,
            user_handle=unb64url(options["user"]["id"]),
        )
        if again is not None:
            credential = self.credentials[again]
        self.credentials[credential.id] = credential
        client_data = self._client_data(
            "webauthn.create", challenge or options["challenge"], origin
        )
        attested = (
            uuid_bytes(self.aaguid)
            + struct.pack(">H", len(credential.id))
            + credential.id
            + credential.cose_public_key()
        )
        auth_data = self._auth_data(rp, flags, credential.sign_count, attested=attested)
        signed = auth_data + hashlib.sha256(client_data).digest()
        if attestation is not None:  # `packed` with a certificate (WebAuthn §8.2)
            key_, certificate = attestation
            statement = {"alg": -7, "sig": key_.sign(signed, ec.ECDSA(hashes.SHA256()))}
            statement["x5c"] = [certificate]
            fmt: str = "packed"
        elif self_attested:  # `packed`, signed by the credential's own key
            statement, fmt = {"alg": -7, "sig": credential.sign(signed)}, "packed"
        else:
            statement, fmt = {}, "none"
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": statement, "authData": auth_data})
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "transports": ["internal", "hybrid"],
            },
        }

    # --- navigator.credentials.get() ----------------------------------------------------------

    def get(
        self,
        options: dict[str, Any],
        *,
        credential_id: bytes | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int | None = None,
        sign_count: int | None = None,
        user_handle: bytes | None = None,
        challenge: str | None = None,
    ) -> dict[str, Any]:
        """An assertion with the first credential the options allow (any of ours when they
        list none: a discoverable credential), or the one named."""
        credential = self._pick(options, credential_id)
        if sign_count is not None:
            credential.sign_count = sign_count
        elif self.counts:
            credential.sign_count += 1
        client_data = self._client_data("webauthn.get", challenge or options["challenge"], origin)
        auth_data = self._auth_data(rp_id or credential.rp_id, flags, credential.sign_count)
        signature = credential.sign(auth_data + hashlib.sha256(client_data).digest())
        handle = credential.user_handle if user_handle is None else user_handle
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle),
            },
        }

    def _pick(self, options: dict[str, Any], credential_id: bytes | None) -> Credential:
        if credential_id is not None:
            return self.credentials[credential_id]
        allowed = [unb64url(c["id"]) for c in options.get("allowCredentials") or []]
        for cid, credential in self.credentials.items():
            if not allowed or cid in allowed:
                return credential
        raise LookupError("no credential of this authenticator is allowed")

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin}
        return json.dumps({**data, "crossOrigin": False}).encode()

    def _auth_data(
        self, rp_id: str, flags: int | None, sign_count: int, *, attested: bytes = b""
    ) -> bytes:
        if flags is None:
            flags = UP | UV | ((BE | BS) if self.synced else 0)
        if attested:
            flags |= AT
        rp_hash = hashlib.sha256(rp_id.encode()).digest()
        return rp_hash + bytes([flags]) + struct.pack(">I", sign_count) + attested


def uuid_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("-", ""))

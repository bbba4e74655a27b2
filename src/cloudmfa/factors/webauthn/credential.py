"""A registered credential as the factor row keeps it, and the credential id as found in a
browser's answer.

The row's ``data`` holds the public parts (credential id, COSE public key, transports, AAGUID,
backup flags); its ``counter`` the signature count; its ``lookup_key`` a SHA-256 of the
credential id (WebAuthn allows ids up to 1023 bytes, longer than the indexed column, and the
hash has a fixed length).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from cloudmfa.errors import InvalidCode

MALFORMED = "The credential is malformed."
# WebAuthn §5.1.2: a credential id is at most 1023 bytes (1364 base64url characters).
MAX_CREDENTIAL_ID_CHARS = 1364


def lookup_key(credential_id: bytes) -> str:
    return bytes_to_base64url(hashlib.sha256(credential_id).digest())


def credential_id_of(credential: Mapping[str, Any]) -> bytes:
    """The raw credential id a browser's answer names (its ``rawId``, which must agree with
    ``id``); InvalidCode when there is none that decodes."""
    raw, named = credential.get("rawId"), credential.get("id")
    if not isinstance(raw, str) or not isinstance(named, str) or raw != named:
        raise InvalidCode(MALFORMED)
    if not 0 < len(raw) <= MAX_CREDENTIAL_ID_CHARS:
        raise InvalidCode(MALFORMED)
    try:
        return base64url_to_bytes(raw)
    except ValueError:
        raise InvalidCode(MALFORMED) from None


@dataclass(frozen=True, slots=True)
class StoredCredential:
    credential_id: bytes
    public_key: bytes  # COSE_Key (RFC 9052 §7)
    transports: tuple[str, ...]
    aaguid: str
    backup_eligible: bool
    backed_up: bool

    def data(self) -> dict[str, Any]:
        return {
            "credential_id": bytes_to_base64url(self.credential_id),
            "public_key": bytes_to_base64url(self.public_key),
            "transports": list(self.transports),
            "aaguid": self.aaguid,
            "backup_eligible": self.backup_eligible,
            "backed_up": self.backed_up,
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> StoredCredential:
        return cls(
            credential_id=base64url_to_bytes(data["credential_id"]),
            public_key=base64url_to_bytes(data["public_key"]),
            transports=tuple(data.get("transports") or ()),
            aaguid=str(data.get("aaguid") or ""),
            backup_eligible=bool(data.get("backup_eligible")),
            backed_up=bool(data.get("backed_up")),
        )

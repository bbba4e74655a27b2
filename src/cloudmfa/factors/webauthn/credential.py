"""A registered credential as the factor row keeps it, and the credential id as found in a
browser's answer.

The row's ``data`` holds the public parts (credential id, COSE public key, transports, AAGUID,
backup flags); its ``counter`` the signature count; its ``lookup_key`` a SHA-256 of the
credential id (WebAuthn allows ids up to 1023 bytes, longer than the indexed column, and the
hash has a fixed length).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudmfa.errors import InvalidCode

MALFORMED = "The credential is malformed."
DOES_NOT_VERIFY = "The credential does not verify."
# WebAuthn §5.1.2: a credential id is at most 1023 bytes (1364 base64url characters).
MAX_CREDENTIAL_ID_CHARS = 1364


def bytes_to_base64url(data: bytes) -> str:
    """RFC 4648 §5 without padding, as WebAuthn's JSON forms write bytes. (py_webauthn has the
    same helper; this module stays free of it, so a worker loads py_webauthn, about 6 MiB with
    pyOpenSSL, only once it checks a ceremony.)"""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def base64url_to_bytes(text: str) -> bytes:
    """The inverse; ValueError for anything that is not base64url."""
    try:
        return base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not base64url") from exc


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

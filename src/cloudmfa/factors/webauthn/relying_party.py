"""The relying party (WebAuthn §5.1.4, §13.4.9): who passkeys are bound to, from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloudmfa.config import Settings

if TYPE_CHECKING:
    from webauthn.helpers.structs import AttestationFormat

# Challenges (§13.4.3) of 32 random bytes, twice the minimum of 16.
CHALLENGE_BYTES = 32
# How long the browser is told to wait, and how long a challenge is kept: five minutes, time to
# find a security key or to pick a passkey from the autofill list.
CEREMONY_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str  # the registrable domain passkeys are bound to ("example.com")
    name: str  # what the browser's passkey dialog shows
    origins: tuple[str, ...]  # the pages allowed to run a ceremony ("https://login.example.com")
    require_user_verification: bool  # a biometric or device PIN, not presence alone
    attestation: str  # "none" or "direct"
    allowed_aaguids: frozenset[str]  # with direct attestation; empty: any authenticator
    attestation_roots: tuple[bytes, ...]  # PEM root certificates that vouch for an AAGUID

    @classmethod
    def from_settings(cls, settings: Settings) -> RelyingParty:
        roots: tuple[bytes, ...] = ()
        if settings.webauthn_attestation_roots:
            roots = tuple(_pem_certificates(Path(settings.webauthn_attestation_roots)))
        return cls(
            id=settings.webauthn_rp_id,
            name=settings.webauthn_rp_name or settings.issuer,
            origins=settings.effective_webauthn_origins,
            require_user_verification=settings.webauthn_user_verification == "required",
            attestation=settings.webauthn_attestation,
            allowed_aaguids=frozenset(settings.webauthn_allowed_aaguids),
            attestation_roots=roots,
        )

    def roots_by_format(self) -> dict[AttestationFormat, list[bytes]]:
        """py_webauthn's shape: the same roots for every attestation format."""
        from webauthn.helpers.structs import AttestationFormat

        if not self.attestation_roots:
            return {}
        return {fmt: list(self.attestation_roots) for fmt in AttestationFormat}


_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def _pem_certificates(path: Path) -> list[bytes]:
    """Each certificate of a PEM bundle, as its own PEM block."""
    text = path.read_bytes()
    found = []
    start = text.find(_BEGIN)
    while start != -1:
        end = text.find(_END, start)
        if end == -1:
            break
        found.append(text[start : end + len(_END)] + b"\n")
        start = text.find(_BEGIN, end)
    if not found:
        raise ValueError(f"{path}: no PEM certificate found")
    return found

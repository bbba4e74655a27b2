"""The factor interface. A factor module enrols, activates, challenges and verifies one type of
second factor and reports what it proved; flows never look inside a factor.

Verifying writes nothing: a factor reports what it proved and the claim that makes the proof
single use (store/claims.py), and the flow applies that claim atomically with its own writes.

Two shapes:
- ``FactorModule``: factors stored as rows of their own (TOTP, SMS, email, WebAuthn);
- ``VirtualFactor``: a factor made of something else the user holds (recovery codes), offered
  at login under a fixed id.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.clock import Clock
from cloudmfa.security.secretbox import SecretBox
from cloudmfa.store.ephemeral import EphemeralStore

if TYPE_CHECKING:  # store.claims imports the repositories, which import this module
    from cloudmfa.store.claims import Claim


@dataclass(frozen=True, slots=True)
class StoredFactor:
    id: str
    user_id: str
    type: str
    label: str | None
    status: str  # pending | active
    secret: bytes | None  # encrypted
    data: dict[str, Any]
    last_used_step: int | None
    created_at: datetime
    activated_at: datetime | None
    last_used_at: datetime | None

    def snapshot(self) -> dict[str, Any]:
        """The factor as JSON, its secret still encrypted, to keep with an mfa_token."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type,
            "label": self.label,
            "status": self.status,
            "secret": base64.b64encode(self.secret).decode() if self.secret is not None else None,
            "data": self.data,
            "last_used_step": self.last_used_step,
            "created_at": self.created_at.isoformat(),
            "activated_at": _iso(self.activated_at),
            "last_used_at": _iso(self.last_used_at),
        }

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> StoredFactor:
        secret = snapshot["secret"]
        return cls(
            id=snapshot["id"],
            user_id=snapshot["user_id"],
            type=snapshot["type"],
            label=snapshot["label"],
            status=snapshot["status"],
            secret=base64.b64decode(secret) if secret is not None else None,
            data=dict(snapshot["data"]),
            last_used_step=snapshot["last_used_step"],
            created_at=datetime.fromisoformat(snapshot["created_at"]),
            activated_at=_from_iso(snapshot["activated_at"]),
            last_used_at=_from_iso(snapshot["last_used_at"]),
        )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


@dataclass(frozen=True, slots=True)
class Proof:
    """What a successful verification proved, in RFC 8176 `amr` values."""

    amr: tuple[str, ...]
    claim: Claim  # what must be spent, atomically with the sign-in, for the proof to count
    phishing_resistant: bool = False  # acr `phr`
    user_verified: bool = False  # a user-verified passkey counts as multi-factor on its own


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new pending factor: what to store, and what to show the user once."""

    label: str | None
    secret: bytes | None = None  # plaintext; the flow encrypts it before storing
    data: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Challenge:
    status: int  # 200, or 202 when something was sent
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FactorOption:
    """One entry of a login response's `factors` list."""

    id: str
    type: str
    label: str | None


@dataclass(frozen=True, slots=True)
class UserRef:
    id: str
    email: str


@dataclass(frozen=True, slots=True)
class FactorEnv:
    """What factor modules may use. Handed over by the flows; factors import no settings."""

    clock: Clock
    secretbox: SecretBox
    store: EphemeralStore
    issuer: str  # the name authenticator apps show


class FactorModule(Protocol):
    type: ClassVar[str]
    # Whether a login proof may be checked against the factor as it was read at the password
    # step (kept with the mfa_token, secret still encrypted) instead of reading it again. Only
    # true when the proof's claim re-checks, in the database, everything verify relied on: a
    # factor deleted or a code spent since then makes the claim, and so the sign-in, fail.
    verifies_from_snapshot: ClassVar[bool]

    async def enrol(
        self, env: FactorEnv, *, user: UserRef, factor_id: str, params: dict[str, Any]
    ) -> Enrolment: ...

    async def activate(self, env: FactorEnv, factor: StoredFactor, proof: dict[str, Any]) -> Claim:
        """Check the proof of possession (raise InvalidCode); the flow applies the returned
        claim and flips the status in one transaction."""
        ...

    async def challenge(
        self, conn: AsyncConnection, env: FactorEnv, factor: StoredFactor
    ) -> Challenge: ...

    async def verify(self, env: FactorEnv, factor: StoredFactor, proof: dict[str, Any]) -> Proof:
        """Check a login proof (raise InvalidCode); its claim makes it single use."""
        ...

    def describe(self, factor: StoredFactor) -> FactorOption: ...


class VirtualFactor(Protocol):
    type: ClassVar[str]
    factor_id: ClassVar[str]

    async def offered(self, conn: AsyncConnection, user_id: str) -> FactorOption | None: ...

    async def verify(self, env: FactorEnv, user_id: str, proof: dict[str, Any]) -> Proof: ...


def proof_code(proof: dict[str, Any]) -> str:
    """The `code` of a proof, or an InvalidCode-worthy empty string."""
    code = proof.get("code")
    return code if isinstance(code, str) else ""

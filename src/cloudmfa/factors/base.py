"""The factor contract: what a factor type does, and what it is given and gives back.

A factor type (TOTP, SMS, email, WebAuthn) enrols, activates, challenges and verifies one kind
of second factor. It *describes* what should happen and the flows *act*: a challenge returns a
message to deliver or options for the browser, never sends anything; a verification returns
what it proved and the claim that makes the proof single use, and writes nothing; an activation
returns what to keep with the factor. The edge turns these values into HTTP answers. A factor
type knows neither HTTP nor the settings: what it needs is handed to its constructor
(``FactorDeps``), and the login attempt it works for is handed to each call.

Two shapes:
- ``FactorType``: a factor stored as a row of its own, one row per enrolment;
- ``BackupFactor``: recovery codes: a set of saved secrets offered at login under a fixed id
  while another factor is active, issued with the first factor and gone with the last one.

Adding a factor type is a package under ``factors/`` and one line in ``factors/registry.py``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cloudmfa.clock import Clock
from cloudmfa.delivery.base import Message
from cloudmfa.errors import InvalidCode
from cloudmfa.security.passwords import PasswordHashing
from cloudmfa.security.secretbox import SecretBox

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from cloudmfa.store.claims import Claim

# --- what a factor type is given -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FactorDeps:
    """What factor types may use, built once from the settings (services.py)."""

    clock: Clock
    secretbox: SecretBox
    hashing: PasswordHashing
    reader: AsyncEngine  # reads outside a transaction
    issuer: str  # the service's name, as authenticator apps and messages show it


@dataclass(frozen=True, slots=True)
class UserRef:
    id: str
    email: str


@dataclass(frozen=True, slots=True)
class StoredFactor:
    """One enrolled factor as stored. Columns every type may use for its own purpose:
    ``secret`` (encrypted by the flow before it is stored), ``data`` (JSON, never secret),
    ``lookup_key`` (unique per type and indexed: found fast, e.g. a WebAuthn credential id) and
    ``counter`` (a number only ever advanced by a claim: TOTP's last time step, a WebAuthn
    signature count)."""

    id: str
    user_id: str
    type: str
    label: str | None
    status: str  # pending | active
    secret: bytes | None
    data: dict[str, Any]
    lookup_key: str | None
    counter: int | None
    created_at: datetime
    activated_at: datetime | None
    last_used_at: datetime | None

    def snapshot(self) -> dict[str, Any]:
        """The factor as JSON, its secret still encrypted, to keep with a login attempt."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type,
            "label": self.label,
            "status": self.status,
            "secret": base64.b64encode(self.secret).decode() if self.secret is not None else None,
            "data": self.data,
            "lookup_key": self.lookup_key,
            "counter": self.counter,
            "created_at": self.created_at.isoformat(),
            "activated_at": _iso(self.activated_at),
            "last_used_at": _iso(self.last_used_at),
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> StoredFactor:
        secret = snapshot["secret"]
        return cls(
            id=snapshot["id"],
            user_id=snapshot["user_id"],
            type=snapshot["type"],
            label=snapshot["label"],
            status=snapshot["status"],
            secret=base64.b64decode(secret) if secret is not None else None,
            data=dict(snapshot["data"]),
            lookup_key=snapshot["lookup_key"],
            counter=snapshot["counter"],
            created_at=datetime.fromisoformat(snapshot["created_at"]),
            activated_at=_from_iso(snapshot["activated_at"]),
            last_used_at=_from_iso(snapshot["last_used_at"]),
        )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """One sign-in between the password step and the second factor: what its mfa_token allows.

    Per-attempt limits and challenge binding live here: ``id`` is what a challenge binds to,
    ``kept`` is what this factor's last challenge in this attempt asked to keep (a code's hash,
    a WebAuthn challenge), ``None`` when there was none."""

    id: str
    user_id: str
    email: str
    offered: Mapping[str, str]  # factor id → type, as offered at the password step
    kept: Mapping[str, Any] | None = None


# --- what a user sends ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeProof:
    """A code typed by the user: TOTP, SMS, email, recovery."""

    described_as: ClassVar[str] = "a code"
    code: str


@dataclass(frozen=True, slots=True)
class CredentialProof:
    """A WebAuthn ``PublicKeyCredential.toJSON()``."""

    described_as: ClassVar[str] = "a WebAuthn credential"
    credential: Mapping[str, Any]


ProofInput = CodeProof | CredentialProof
# Named here because inside a factor class `type` is the factor's name, not the builtin.
ProofKind = type[CodeProof] | type[CredentialProof]
P = TypeVar("P", bound=CodeProof | CredentialProof)


def expect_proof(proof: ProofInput, kind: type[P]) -> P:
    """The proof, when it is of the kind a factor takes (a code, a credential); InvalidCode,
    naming the kind, when it is not."""
    if not isinstance(proof, kind):
        raise InvalidCode(f"This factor takes {kind.described_as}.")
    return proof


class FlaggedProof(InvalidCode):
    """A proof refused for a reason the audit trail must show beside the failure (a WebAuthn
    signature count that went backwards: a cloned authenticator). The answer is the same 401
    as for any wrong proof; the flow records ``event`` with ``details``."""

    def __init__(self, detail: str, *, event: str, details: Mapping[str, Any]) -> None:
        super().__init__(detail)
        self.event = event
        self.details = dict(details)


class EnrolParams(BaseModel):
    """The enrolment parameters every type takes; a type that takes more subclasses it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    label: str | None = Field(default=None, max_length=100)


ParamsKind = type[EnrolParams]
CodeProofKind = type[CodeProof]
CredentialProofKind = type[CredentialProof]


# --- what a factor type gives back ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NothingToSend:
    """The user already holds what proves the factor (an authenticator app, recovery codes)."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    message: Message
    destination_hint: str  # "+1******4567", "j***@example.com"
    expires_in: int  # seconds the code stays valid


@dataclass(frozen=True, slots=True)
class PublicKeyRequest:
    """WebAuthn options for the browser (PublicKeyCredentialRequestOptionsJSON)."""

    options: Mapping[str, Any]


ChallengeOutcome = NothingToSend | SendMessage | PublicKeyRequest


@dataclass(frozen=True, slots=True)
class Challenge:
    outcome: ChallengeOutcome
    # What verify needs later, kept with the login attempt by the flow (never shown).
    keep: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new pending factor: what to store, what to show the user once, what to send."""

    label: str | None
    secret: bytes | None = None  # plaintext; the flow encrypts it before storing
    data: Mapping[str, Any] = field(default_factory=dict)
    shown: Mapping[str, Any] = field(default_factory=dict)  # fields of the 201 answer
    send: SendMessage | None = None  # a code to deliver now (this send starts the cooldown)
    keep: Mapping[str, Any] | None = None  # what activate needs later, kept by the flow


@dataclass(frozen=True, slots=True)
class Activation:
    """A proof of possession that checked out: the claim that spends it, and what to store."""

    claim: Claim
    data: Mapping[str, Any] | None = None  # replaces the factor's data when given
    lookup_key: str | None = None
    counter: int | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """What a successful verification proved, in RFC 8176 ``amr`` values, and the claim that
    must be spent, atomically with the sign-in, for the proof to count."""

    amr: tuple[str, ...]
    claim: Claim
    phishing_resistant: bool = False  # acr `phr`
    user_verified: bool = False  # a user-verified passkey counts as multi-factor on its own
    audit_events: tuple[str, ...] = ()  # what the proof means for the trail ("recovery_code.used")


@dataclass(frozen=True, slots=True)
class OfferedFactor:
    """One entry of a login response's ``factors`` list."""

    id: str
    type: str
    label: str | None


# --- the two shapes --------------------------------------------------------------------------


class FactorType(Protocol):
    type: ClassVar[str]
    # The enrolment parameters this type takes (validated by the flow before enrol is called).
    params: ClassVar[ParamsKind]

    @property
    def proof(self) -> ProofKind:
        """The proof it takes: a typed code or a WebAuthn credential."""
        ...

    # Whether a proof may be checked against the factor as the password step read it (kept
    # with the attempt, secret still encrypted) instead of reading it again. Only true when the
    # claim re-checks, in the database, everything verify relied on.
    verifies_from_snapshot: ClassVar[bool]
    # Whether verify needs what this type's challenge kept (read only for types that do).
    uses_challenge: ClassVar[bool]

    async def enrol(self, user: UserRef, factor_id: str, params: Any) -> Enrolment: ...

    async def activate(
        self, factor: StoredFactor, proof: Any, kept: Mapping[str, Any] | None
    ) -> Activation:
        """Check the proof of possession (raise InvalidCode)."""
        ...

    async def challenge(self, factor: StoredFactor, attempt: LoginAttempt) -> Challenge: ...

    async def verify(self, factor: StoredFactor, proof: Any, attempt: LoginAttempt) -> Verified:
        """Check a login proof (raise InvalidCode); the claim makes it single use."""
        ...

    def describe(self, factor: StoredFactor) -> OfferedFactor: ...


# --- optional abilities of a factor type -------------------------------------------------------


class PasswordlessFactor(Protocol):
    """A type whose proof names its own account (a discoverable WebAuthn credential, whose
    answer carries the user handle), so that it can sign in with no password (API.md
    "Passwordless login with a passkey"). Its ``verify_passwordless`` must itself prove more
    than one factor (possession and user verification): the session counts as multi-factor."""

    type: ClassVar[str]

    async def passwordless_challenge(self) -> Challenge:
        """Options that let the user pick any of their credentials, and what to keep."""
        ...

    def lookup_key_of(self, proof: CredentialProof) -> str:
        """The lookup key of the factor the proof names (raise InvalidCode when it names
        none)."""
        ...

    async def verify_passwordless(
        self, factor: StoredFactor, proof: CredentialProof, kept: Mapping[str, Any]
    ) -> Verified: ...


class OwnerDetails(Protocol):
    """A type that shows its owner more than the common fields in ``/me/factors`` (a passkey's
    authenticator name and backup state). Never a secret."""

    def owner_details(self, factor: StoredFactor) -> Mapping[str, Any]: ...


class BackupFactor(Protocol):
    type: ClassVar[str]
    factor_id: ClassVar[str]  # the fixed id it is offered under
    proof: ClassVar[CodeProofKind]

    def left_column(self, user_id: ColumnElement[str]) -> ColumnElement[int]:
        """How many the account has left, as a value inside the password step's one read."""
        ...

    def offered_with(self, left: int) -> OfferedFactor | None:
        """The offer, given what ``left_column`` read."""
        ...

    async def verify(self, user_id: str, proof: CodeProof, attempt: LoginAttempt) -> Verified: ...

    async def prepare(self) -> PreparedSet:
        """A new set, its hashes computed (slow by design) before any transaction opens."""
        ...

    async def store(self, conn: AsyncConnection, user_id: str, prepared: PreparedSet) -> None:
        """Replace the user's set, in the caller's transaction."""
        ...

    async def discard(self, conn: AsyncConnection, user_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PreparedSet:
    shown: list[str]  # shown to the user once
    stored: list[Any]  # what the backup factor stores instead

"""Signed access tokens (JWT, ES256, RFC 7519/7515) and opaque refresh tokens.

Signing keys live in the database so every replica signs with the same key and serves the
same JWKS. Rotation (``cloudmfa rotate-signing-key``) adds a new key and retires the old one,
which stays in the JWKS until every token it signed has expired.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cloudmfa.clock import Clock
from cloudmfa.errors import InvalidToken

ALGORITHM = "ES256"
RELOAD_INTERVAL_S = 30  # how soon a replica notices a rotation done elsewhere
JWKS_MAX_AGE_S = 300  # how long relying parties may cache the JWKS
# A new key is published this long before it signs, so no relying party holding a cached
# JWKS meets a token whose kid it has never seen.
PUBLISH_LEAD_S = JWKS_MAX_AGE_S + RELOAD_INTERVAL_S
_UNKNOWN_KID_RELOAD_GAP_S = 5


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key_pem: str
    public_jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None


def generate_signing_key(now: datetime) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    kid = secrets.token_urlsafe(12)
    jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
    return SigningKey(kid, pem, jwk, now, None)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    sid: str
    jti: str
    iat: int
    exp: int
    auth_time: int
    amr: tuple[str, ...]
    acr: str | None


class KeyRing:
    """The keys this process signs and verifies with, refreshed from the database."""

    def __init__(self, *, clock: Clock, access_ttl_s: int) -> None:
        self._clock = clock
        self._access_ttl_s = access_ttl_s
        self._signing: SigningKey | None = None
        self._signing_private: Any = None
        self._verifying: dict[str, Any] = {}
        self._published: list[dict[str, Any]] = []
        self.loaded_at = float("-inf")

    def load(self, keys: list[SigningKey]) -> None:
        now = self._clock.now()
        # A retired key may have signed until a replica noticed the rotation, so it is kept
        # for one reload interval beyond the token lifetime.
        keep = timedelta(seconds=self._access_ttl_s + RELOAD_INTERVAL_S + 60)
        live = [k for k in keys if k.retired_at is None or k.retired_at + keep > now]
        signing = [k for k in live if k.retired_at is None or k.retired_at > now]
        if not signing:
            raise RuntimeError("no active signing key")
        # The newest key that has been published for long enough; a deployment's very first
        # key (nothing older to sign with) signs at once.
        lead = timedelta(seconds=PUBLISH_LEAD_S)
        published = [k for k in signing if k.created_at + lead <= now] or signing
        newest = max(published, key=lambda k: k.created_at)
        if self._signing is None or self._signing.kid != newest.kid:
            self._signing_private = serialization.load_pem_private_key(
                newest.private_key_pem.encode("ascii"), password=None
            )
        self._signing = newest
        self._verifying = {k.kid: ECAlgorithm.from_jwk(k.public_jwk) for k in live}
        self._published = [dict(k.public_jwk) for k in live]
        self.loaded_at = time.monotonic()

    def needs_reload(self) -> bool:
        return time.monotonic() - self.loaded_at > RELOAD_INTERVAL_S

    def may_reload_for_unknown_kid(self) -> bool:
        return time.monotonic() - self.loaded_at > _UNKNOWN_KID_RELOAD_GAP_S

    def knows(self, kid: str) -> bool:
        return kid in self._verifying

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self._published)}

    def sign(self, claims: dict[str, Any]) -> str:
        if self._signing is None:
            raise RuntimeError("key ring not loaded")
        return jwt.encode(
            claims,
            self._signing_private,
            algorithm=ALGORITHM,
            headers={"kid": self._signing.kid, "typ": "at+jwt"},
        )

    def verification_key(self, kid: str) -> Any:
        return self._verifying.get(kid)


class AccessTokens:
    """Issues and checks access tokens; every check failure is the same ``invalid_token``."""

    def __init__(
        self, ring: KeyRing, *, clock: Clock, issuer: str, audience: str, ttl_s: int
    ) -> None:
        self.ring = ring
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s

    def issue(
        self,
        *,
        user_id: str,
        session_id: str,
        auth_time: datetime,
        amr: list[str],
        acr: str | None,
    ) -> str:
        now = int(self._clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": user_id,
            "aud": self._audience,
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": str(uuid.uuid4()),
            "sid": session_id,
            "auth_time": int(auth_time.timestamp()),
            "amr": amr,
        }
        if acr:
            claims["acr"] = acr
        return self.ring.sign(claims)

    @staticmethod
    def unverified_kid(token: str) -> str | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid = header.get("kid")
        return kid if isinstance(kid, str) else None

    def verify(self, token: str) -> AccessClaims:
        kid = self.unverified_kid(token)
        key = self.ring.verification_key(kid) if kid else None
        if key is None:
            raise InvalidToken("The access token is not valid.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # never what the token's header asks for
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": ["iss", "sub", "aud", "iat", "exp", "jti", "sid", "auth_time"],
                    "verify_exp": False,  # checked below against the injectable clock
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken("The access token is not valid.") from exc
        now = self._clock.now().timestamp()
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= now:
            raise InvalidToken("The access token has expired.")
        amr = claims.get("amr", [])
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
            raise InvalidToken("The access token is not valid.")
        try:
            return AccessClaims(
                sub=str(claims["sub"]),
                sid=str(claims["sid"]),
                jti=str(claims["jti"]),
                iat=int(claims["iat"]),
                exp=exp,
                auth_time=int(claims["auth_time"]),
                amr=tuple(amr),
                acr=claims.get("acr") if isinstance(claims.get("acr"), str) else None,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidToken("The access token is not valid.") from exc


def new_opaque_token() -> tuple[str, str]:
    """A 256-bit random token and the hash that is stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, hash_opaque_token(token)


def hash_opaque_token(token: str) -> str:
    # The token is uniformly random, so a fast hash is enough: there is nothing to guess.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

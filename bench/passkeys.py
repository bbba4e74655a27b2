"""(h): the verify step with a passkey assertion, beside (b)'s TOTP code.

Users get an active WebAuthn factor written straight through the stores; every credential has
its own id (the lookup key is unique) over one shared P-256 key, which costs the service the
same to check as a key of its own. The assertions are signed before the clock starts, so the
load generator, sharing the cores with the server, does no signing while it measures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import uuid
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cloudmfa.config import Settings
from cloudmfa.factors.base import PublicKeyRequest, StoredFactor
from cloudmfa.factors.webauthn import user_handle
from cloudmfa.factors.webauthn.credential import StoredCredential, lookup_key
from cloudmfa.flows import second_factor
from cloudmfa.flows.context import RequestInfo
from cloudmfa.services import Services
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.users import User

UP_UV = 0x01 | 0x04
_KEY = ec.generate_private_key(ec.SECP256R1())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _cose_public_key() -> bytes:
    numbers = _KEY.public_key().public_numbers()
    x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    return bytes(cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y}))


async def provision(settings: Settings, count: int, password: str) -> list[tuple[str, ...]]:
    """`count` users, each with one active passkey: (user id, email, factor id, credential id)."""
    svc = Services.build(settings)
    await svc.start(migrate=True)
    password_hash = await svc.hashing.hash(password)
    now = svc.clock.now()
    public_key = _cose_public_key()
    users: list[tuple[str, ...]] = []
    try:
        for start in range(0, count, 500):
            async with svc.engine.begin() as conn:
                for i in range(start, min(count, start + 500)):
                    user_id, factor_id = str(uuid.uuid4()), str(uuid.uuid4())
                    email = f"bench-pk-{i}-{secrets.token_hex(3)}@example.com"
                    credential_id = secrets.token_bytes(32)
                    stored = StoredCredential(
                        credential_id, public_key, ("internal",), "", False, False
                    )
                    await user_repo.insert_user(
                        conn, User(user_id, email, None, password_hash, (), None, now)
                    )
                    await factor_repo.insert_factor(
                        conn,
                        StoredFactor(
                            id=factor_id,
                            user_id=user_id,
                            type="webauthn",
                            label="bench",
                            status="active",
                            secret=None,
                            data=stored.data(),
                            lookup_key=lookup_key(credential_id),
                            counter=0,
                            created_at=now,
                            activated_at=now,
                            last_used_at=None,
                        ),
                    )
                    users.append((user_id, email, factor_id, _b64url(credential_id)))
    finally:
        await svc.close()
    return users


async def prepare_verifies(settings: Settings, users: list[tuple[str, ...]]) -> list[bytes]:
    """For each user, what the password step and the challenge leave (an mfa_token whose
    attempt keeps a fresh challenge, in the shared Redis), and the signed body of /auth/verify."""
    svc = Services.build(settings)
    rp = settings.webauthn_rp_id
    origin = settings.effective_webauthn_origins[0]
    bodies = []
    try:
        for user_id, email, factor_id, credential_id in users:
            async with svc.reader.connect() as conn:
                account = await svc.factor_types.account_for_sign_in(conn, email)
            assert account is not None and account.user.id == user_id
            offer = svc.factor_types.second_step_of(account)
            started = await second_factor.begin(svc, user_id=user_id, email=email, offer=offer)
            outcome = await second_factor.challenge(
                svc, RequestInfo(), started.mfa_token, factor_id
            )
            assert isinstance(outcome, PublicKeyRequest)
            options = outcome.options
            credential = _assertion(rp, origin, options["challenge"], credential_id, user_id)
            body = {
                "mfa_token": started.mfa_token,
                "factor_id": factor_id,
                "credential": credential,
            }
            bodies.append(json.dumps(body).encode())
    finally:
        await svc.close()
    return bodies


def _assertion(
    rp_id: str, origin: str, challenge: str, credential_id: str, user_id: str
) -> dict[str, Any]:
    client_data = json.dumps(
        {"type": "webauthn.get", "challenge": challenge, "origin": origin, "crossOrigin": False}
    ).encode()
    # Sign count 1: spent by the same conditional UPDATE as a TOTP time step (like for like).
    auth_data = hashlib.sha256(rp_id.encode()).digest() + bytes([UP_UV]) + struct.pack(">I", 1)
    signature = _KEY.sign(
        auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
    )
    return {
        "id": credential_id,
        "rawId": credential_id,
        "type": "public-key",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": _b64url(client_data),
            "authenticatorData": _b64url(auth_data),
            "signature": _b64url(signature),
            "userHandle": _b64url(user_handle(user_id)),
        },
    }

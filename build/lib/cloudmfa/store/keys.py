"""Signing keys, shared by every replica through the database.

The private half is stored sealed by the secret key ring (AES-256-GCM, bound to the key's kid),
like the TOTP seeds: a copy of the database alone cannot sign tokens. Rows written before that
hold the PEM itself; they stay readable, and the first start seals them.
"""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.security.secretbox import SecretBox
from cloudmfa.security.tokens import SigningKey
from cloudmfa.store.models import signing_keys

_SEALED = "sealed:"  # a PEM starts with "-----BEGIN", so the two cannot be confused


def seal(box: SecretBox, kid: str, pem: str) -> str:
    blob = box.encrypt(pem.encode("ascii"), context=_context(kid))
    return _SEALED + base64.b64encode(blob).decode("ascii")


def unseal(box: SecretBox, kid: str, stored: str) -> str:
    if not is_sealed(stored):
        return stored
    blob = base64.b64decode(stored[len(_SEALED) :])
    return box.decrypt(blob, context=_context(kid)).decode("ascii")


def is_sealed(stored: str) -> bool:
    return stored.startswith(_SEALED)


def sealed_under(stored: str) -> str | None:
    """The ring key a stored private key is sealed with; None for one stored as a bare PEM."""
    if not is_sealed(stored):
        return None
    return SecretBox.key_id_of(base64.b64decode(stored[len(_SEALED) :]))


def _context(kid: str) -> str:
    # Not a factor id (those are UUIDs), so no factor's ciphertext opens as a key, nor back.
    return f"signing-key:{kid}"


async def load_keys(conn: AsyncConnection, box: SecretBox) -> list[SigningKey]:
    rows = await conn.execute(select(signing_keys).order_by(signing_keys.c.created_at))
    return [
        SigningKey(
            kid=r.kid,
            private_key_pem=unseal(box, r.kid, r.private_key_pem),
            public_jwk=dict(r.public_jwk),
            created_at=r.created_at,
            retired_at=r.retired_at,
        )
        for r in rows
    ]


async def has_active_key(conn: AsyncConnection) -> bool:
    """Whether a key not yet retired exists (nothing is unsealed to tell)."""
    active = select(signing_keys.c.kid).where(signing_keys.c.retired_at.is_(None)).limit(1)
    return (await conn.execute(active)).first() is not None


async def insert_key(conn: AsyncConnection, key: SigningKey, box: SecretBox) -> None:
    await conn.execute(
        insert(signing_keys).values(
            kid=key.kid,
            algorithm="ES256",
            private_key_pem=seal(box, key.kid, key.private_key_pem),
            public_jwk=key.public_jwk,
            created_at=key.created_at,
            retired_at=key.retired_at,
        )
    )


async def stored_private_keys(conn: AsyncConnection) -> list[tuple[str, str]]:
    """(kid, private key as stored) of every key, for sealing and re-encryption."""
    rows = await conn.execute(
        select(signing_keys.c.kid, signing_keys.c.private_key_pem).order_by(signing_keys.c.kid)
    )
    return [(r.kid, r.private_key_pem) for r in rows]


async def replace_private_key(conn: AsyncConnection, kid: str, old: str, new: str) -> bool:
    """Swap a stored private key, unless someone changed it meanwhile."""
    stmt = (
        update(signing_keys)
        .where(signing_keys.c.kid == kid, signing_keys.c.private_key_pem == old)
        .values(private_key_pem=new)
    )
    return bool((await conn.execute(stmt)).rowcount)


async def retire_active_keys(conn: AsyncConnection, retire_at: datetime) -> int:
    """Stop every current key from signing at ``retire_at``."""
    result = await conn.execute(
        update(signing_keys).where(signing_keys.c.retired_at.is_(None)).values(retired_at=retire_at)
    )
    return int(result.rowcount or 0)

"""Signing keys, shared by every replica through the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.security.tokens import SigningKey
from cloudmfa.store.models import signing_keys


async def load_keys(conn: AsyncConnection) -> list[SigningKey]:
    rows = await conn.execute(select(signing_keys).order_by(signing_keys.c.created_at))
    return [
        SigningKey(
            kid=r.kid,
            private_key_pem=r.private_key_pem,
            public_jwk=dict(r.public_jwk),
            created_at=r.created_at,
            retired_at=r.retired_at,
        )
        for r in rows
    ]


async def insert_key(conn: AsyncConnection, key: SigningKey) -> None:
    await conn.execute(
        insert(signing_keys).values(
            kid=key.kid,
            algorithm="ES256",
            private_key_pem=key.private_key_pem,
            public_jwk=key.public_jwk,
            created_at=key.created_at,
            retired_at=key.retired_at,
        )
    )


async def retire_active_keys(conn: AsyncConnection, retire_at: datetime) -> int:
    """Stop every current key from signing at ``retire_at``."""
    result = await conn.execute(
        update(signing_keys).where(signing_keys.c.retired_at.is_(None)).values(retired_at=retire_at)
    )
    return int(result.rowcount or 0)

"""Recovery codes, stored only as hashes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import recovery_codes


async def replace_set(
    conn: AsyncConnection, user_id: str, code_hashes: list[str], now: datetime
) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    await conn.execute(
        insert(recovery_codes),
        [
            {"id": str(uuid.uuid4()), "user_id": user_id, "code_hash": h, "created_at": now}
            for h in code_hashes
        ],
    )


_COUNT_UNUSED = (
    select(func.count())
    .select_from(recovery_codes)
    .where(recovery_codes.c.user_id == bindparam("b_user_id"), recovery_codes.c.used_at.is_(None))
)


async def count_unused(conn: AsyncConnection, user_id: str) -> int:
    return int((await conn.execute(_COUNT_UNUSED, {"b_user_id": user_id})).scalar_one())


async def redeem(conn: AsyncConnection, user_id: str, code_hash: str, now: datetime) -> bool:
    """Spend a code in one conditional UPDATE: of parallel redemptions exactly one succeeds."""
    stmt = (
        update(recovery_codes)
        .where(
            recovery_codes.c.user_id == user_id,
            recovery_codes.c.code_hash == code_hash,
            recovery_codes.c.used_at.is_(None),
        )
        .values(used_at=now)
        .returning(recovery_codes.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def delete_all(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))

"""Remembered devices: a device token (stored as a hash) that skips the second factor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import remembered_devices


@dataclass(frozen=True, slots=True)
class RememberedDevice:
    id: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime
    ip: str | None
    user_agent: str | None


async def insert_device(
    conn: AsyncConnection,
    *,
    device_id: str,
    user_id: str,
    token_hash: str,
    now: datetime,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        insert(remembered_devices).values(
            id=device_id,
            user_id=user_id,
            token_hash=token_hash,
            created_at=now,
            expires_at=expires_at,
            ip=ip,
            user_agent=user_agent,
        )
    )


async def use_device(
    conn: AsyncConnection, *, user_id: str, token_hash: str, now: datetime
) -> str | None:
    """The device's id when the token is live and belongs to this user (and note the use)."""
    stmt = (
        update(remembered_devices)
        .where(
            remembered_devices.c.user_id == user_id,
            remembered_devices.c.token_hash == token_hash,
            remembered_devices.c.expires_at > now,
        )
        .values(last_used_at=now)
        .returning(remembered_devices.c.id)
    )
    row = (await conn.execute(stmt)).first()
    return row.id if row else None


async def list_devices(
    conn: AsyncConnection, user_id: str, now: datetime
) -> list[RememberedDevice]:
    stmt = (
        select(remembered_devices)
        .where(remembered_devices.c.user_id == user_id, remembered_devices.c.expires_at > now)
        .order_by(remembered_devices.c.created_at.desc(), remembered_devices.c.id)
    )
    return [
        RememberedDevice(
            id=r.id,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            expires_at=r.expires_at,
            ip=r.ip,
            user_agent=r.user_agent,
        )
        for r in await conn.execute(stmt)
    ]


async def delete_device(conn: AsyncConnection, device_id: str, user_id: str) -> bool:
    stmt = delete(remembered_devices).where(
        remembered_devices.c.id == device_id, remembered_devices.c.user_id == user_id
    )
    return bool((await conn.execute(stmt)).rowcount)


async def forget_all(conn: AsyncConnection, user_id: str) -> int:
    stmt = delete(remembered_devices).where(remembered_devices.c.user_id == user_id)
    return int((await conn.execute(stmt)).rowcount)

"""Users and their roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import users


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    display_name: str | None
    password_hash: str
    roles: tuple[str, ...]
    locked_at: datetime | None
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        password_hash=row.password_hash,
        roles=tuple(row.roles or ()),
        locked_at=row.locked_at,
        created_at=row.created_at,
    )


class DuplicateEmail(Exception):
    pass


async def insert_user(conn: AsyncConnection, user: User) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(users).values(
                    id=user.id,
                    email=user.email,
                    display_name=user.display_name,
                    password_hash=user.password_hash,
                    roles=list(user.roles),
                    locked_at=user.locked_at,
                    created_at=user.created_at,
                    updated_at=user.created_at,
                )
            )
    except IntegrityError as exc:
        raise DuplicateEmail(user.email) from exc


_BY_EMAIL = select(users).where(users.c.email == bindparam("b_email"))  # built once: login path
_BY_ID = select(users).where(users.c.id == bindparam("b_id"))  # every authenticated call


async def get_by_email(conn: AsyncConnection, email: str) -> User | None:
    row = (await conn.execute(_BY_EMAIL, {"b_email": email})).first()
    return _user(row) if row else None


async def lock_for_update(conn: AsyncConnection, user_id: str) -> None:
    """Serialise changes to one user's factors (PostgreSQL row lock; SQLite transactions are
    already serialised by BEGIN IMMEDIATE)."""
    await conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())


async def get_by_id(conn: AsyncConnection, user_id: str) -> User | None:
    row = (await conn.execute(_BY_ID, {"b_id": user_id})).first()
    return _user(row) if row else None


async def set_password_hash(
    conn: AsyncConnection, user_id: str, password_hash: str, now: datetime
) -> None:
    await conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(password_hash=password_hash, updated_at=now)
    )


async def set_roles(
    conn: AsyncConnection, user_id: str, roles: tuple[str, ...], now: datetime
) -> None:
    await conn.execute(
        update(users).where(users.c.id == user_id).values(roles=list(roles), updated_at=now)
    )


async def set_locked(
    conn: AsyncConnection, user_id: str, locked_at: datetime | None, now: datetime
) -> bool:
    result = await conn.execute(
        update(users).where(users.c.id == user_id).values(locked_at=locked_at, updated_at=now)
    )
    return bool(result.rowcount)


async def search(
    conn: AsyncConnection, *, query: str | None, after_email: str | None, limit: int
) -> list[User]:
    """Users ordered by email, keyset-paginated (``after_email`` is the last one seen)."""
    stmt = select(users).order_by(users.c.email).limit(limit)
    if query:
        pattern = (
            "%" + query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        stmt = stmt.where(
            or_(
                users.c.email.like(pattern, escape="\\"),
                func.lower(users.c.display_name).like(pattern, escape="\\"),
            )
        )
    if after_email is not None:
        stmt = stmt.where(users.c.email > after_email)
    return [_user(row) for row in await conn.execute(stmt)]

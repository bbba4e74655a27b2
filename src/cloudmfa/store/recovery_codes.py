"""Recovery codes, stored only as hashes (factors/recovery/codes.py says which)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.store.models import recovery_codes


@dataclass(frozen=True, slots=True)
class NewRecoveryCode:
    lookup: str
    code_hash: str


@dataclass(frozen=True, slots=True)
class UnusedRecoveryCode:
    id: str
    code_hash: str


async def replace_set(
    conn: AsyncConnection, user_id: str, codes: list[NewRecoveryCode], now: datetime
) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    await conn.execute(
        insert(recovery_codes),
        [
            {
                "id": str(uuid.uuid4()),
                "user_id": user_id,
                "lookup": code.lookup,
                "code_hash": code.code_hash,
                "created_at": now,
            }
            for code in codes
        ],
    )


def unused_count(user_id: ColumnElement[str]) -> ScalarSelect[int]:
    """How many unused codes the user has, as a value inside another read (the password step's
    one read, store/factors.py)."""
    return (
        select(func.count())
        .select_from(recovery_codes)
        .where(recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))
        .scalar_subquery()
    )


_COUNT_UNUSED = select(unused_count(bindparam("b_user_id")))

_UNUSED_BY_LOOKUP = select(recovery_codes.c.id, recovery_codes.c.code_hash).where(
    recovery_codes.c.user_id == bindparam("b_user_id"),
    recovery_codes.c.lookup == bindparam("b_lookup"),
    recovery_codes.c.used_at.is_(None),
)


async def count_unused(conn: AsyncConnection, user_id: str) -> int:
    return int((await conn.execute(_COUNT_UNUSED, {"b_user_id": user_id})).scalar_one())


async def unused_by_lookup(
    conn: AsyncConnection, user_id: str, lookup: str
) -> list[UnusedRecoveryCode]:
    rows = await conn.execute(_UNUSED_BY_LOOKUP, {"b_user_id": user_id, "b_lookup": lookup})
    return [UnusedRecoveryCode(row.id, row.code_hash) for row in rows]


async def delete_all(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))


@dataclass(frozen=True, slots=True)
class SpendRecoveryCode:
    """Mark one unused code used (store/claims.py)."""

    code_id: str

    @staticmethod
    def template() -> Update:
        return (
            update(recovery_codes)
            .where(
                recovery_codes.c.id == bindparam("claim_code_id"),
                recovery_codes.c.used_at.is_(None),
            )
            .values(used_at=bindparam("claim_now"))
        )

    def params(self) -> dict[str, Any]:
        return {"claim_code_id": self.code_id}


@dataclass(frozen=True, slots=True)
class SpendLegacyRecoveryCode:
    """Mark one unused code of the old shape (bare SHA-256, no lookup) used."""

    user_id: str
    code_hash: str

    @staticmethod
    def template() -> Update:
        return (
            update(recovery_codes)
            .where(
                recovery_codes.c.user_id == bindparam("claim_owner_id"),
                recovery_codes.c.lookup.is_(None),
                recovery_codes.c.code_hash == bindparam("claim_code_hash"),
                recovery_codes.c.used_at.is_(None),
            )
            .values(used_at=bindparam("claim_now"))
        )

    def params(self) -> dict[str, Any]:
        return {"claim_owner_id": self.user_id, "claim_code_hash": self.code_hash}

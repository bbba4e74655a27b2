"""Second factors as stored rows. Secrets arrive here already encrypted (secretbox)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.factors.base import StoredFactor
from cloudmfa.store.db import update_returning
from cloudmfa.store.models import factors, users
from cloudmfa.store.users import User, user_from_row

# The statements of the login path are built once: building a statement per call (where
# clauses, values) costs more CPU than executing it.
_GET_FACTOR = select(factors).where(
    factors.c.id == bindparam("b_id"), factors.c.user_id == bindparam("b_user_id")
)
# The challenge step's one read: the account (is it there, is it locked) and its factor, which
# the LEFT JOIN leaves NULL when the account has no factor of that id.
_WITH_ACCOUNT = (
    select(factors, users.c.locked_at.label("account_locked_at"))
    .select_from(
        users.outerjoin(
            factors,
            and_(factors.c.id == bindparam("b_id"), factors.c.user_id == users.c.id),
        )
    )
    .where(users.c.id == bindparam("b_user_id"))
)


@dataclass(frozen=True, slots=True)
class SignInAccount:
    """What the password step reads, in one statement: the account, its active factors of the
    enabled types (oldest first), and how many backup codes it has left."""

    user: User
    factors: list[StoredFactor]
    backup_left: int


# The factor's columns in the password step's read, named apart from the account's.
_SIGN_IN_LABELS = {c.name: f"factor_{c.name}" for c in factors.c}


def sign_in_read(backup_left: ColumnElement[int] | None) -> Select[Any]:
    """The password step's one read, built once (by the registry, which knows the backup):
    the account by email (``b_email``) LEFT JOIN its active factors of the types in
    ``b_types`` (one row with the factor's columns NULL when it has none), each row with the
    backup's count. In place of three reads: the account, its factors, the count."""
    left = backup_left if backup_left is not None else literal(0)
    return (
        select(
            users,
            *(c.label(_SIGN_IN_LABELS[c.name]) for c in factors.c),
            left.label("backup_left"),
        )
        .select_from(
            users.outerjoin(
                factors,
                and_(
                    factors.c.user_id == users.c.id,
                    factors.c.status == "active",
                    factors.c.type.in_(bindparam("b_types", expanding=True)),
                ),
            )
        )
        .where(users.c.email == bindparam("b_email"))
        .order_by(factors.c.created_at, factors.c.id)
    )


async def get_for_sign_in(
    conn: AsyncConnection, statement: Select[Any], email: str, types: Iterable[str]
) -> SignInAccount | None:
    rows = (await conn.execute(statement, {"b_email": email, "b_types": list(types)})).all()
    if not rows:
        return None
    found = [
        factor_from_row({name: row._mapping[label] for name, label in _SIGN_IN_LABELS.items()})
        for row in rows
        if row._mapping[_SIGN_IN_LABELS["id"]] is not None
    ]
    return SignInAccount(user_from_row(rows[0]), found, int(rows[0]._mapping["backup_left"]))


_BY_LOOKUP_KEY = select(factors).where(
    factors.c.type == bindparam("b_type"), factors.c.lookup_key == bindparam("b_lookup_key")
)
_ACTIVE_OF_TYPES = (
    select(factors)
    .where(
        factors.c.user_id == bindparam("b_user_id"),
        factors.c.status == "active",
        factors.c.type.in_(bindparam("b_types", expanding=True)),
    )
    .order_by(factors.c.created_at, factors.c.id)
)
_COUNT_ACTIVE_OF_TYPES = (
    select(func.count())
    .select_from(factors)
    .where(
        factors.c.user_id == bindparam("b_user_id"),
        factors.c.status == "active",
        factors.c.type.in_(bindparam("b_types", expanding=True)),
    )
)


def factor_from_row(row: Mapping[Any, Any]) -> StoredFactor:
    """A factor from its columns: a SQLAlchemy row's ``_mapping`` or an asyncpg record."""
    return StoredFactor(
        id=row["id"],
        user_id=row["user_id"],
        type=row["type"],
        label=row["label"],
        status=row["status"],
        secret=bytes(row["secret"]) if row["secret"] is not None else None,
        data=dict(row["data"] or {}),
        lookup_key=row["lookup_key"],
        counter=row["counter"],
        created_at=row["created_at"],
        activated_at=row["activated_at"],
        last_used_at=row["last_used_at"],
    )


async def insert_factor(conn: AsyncConnection, factor: StoredFactor) -> None:
    await conn.execute(
        insert(factors).values(
            id=factor.id,
            user_id=factor.user_id,
            type=factor.type,
            label=factor.label,
            status=factor.status,
            secret=factor.secret,
            data=factor.data,
            lookup_key=factor.lookup_key,
            counter=factor.counter,
            created_at=factor.created_at,
        )
    )


async def get_factor(conn: AsyncConnection, factor_id: str, user_id: str) -> StoredFactor | None:
    row = (await conn.execute(_GET_FACTOR, {"b_id": factor_id, "b_user_id": user_id})).first()
    return factor_from_row(row._mapping) if row else None


@dataclass(frozen=True, slots=True)
class FactorOfAccount:
    account_locked: bool
    factor: StoredFactor | None  # None: the account has no factor of that id


async def get_with_account(
    conn: AsyncConnection, factor_id: str, user_id: str
) -> FactorOfAccount | None:
    """The user's factor and whether the account is locked, in one statement; None when the
    account does not exist."""
    params = {"b_id": factor_id, "b_user_id": user_id}
    row = (await conn.execute(_WITH_ACCOUNT, params)).first()
    if row is None:
        return None
    values = row._mapping
    factor = factor_from_row(values) if values["id"] is not None else None
    return FactorOfAccount(values["account_locked_at"] is not None, factor)


async def get_by_lookup_key(
    conn: AsyncConnection, factor_type: str, lookup_key: str
) -> StoredFactor | None:
    """The factor of this type holding this lookup key (unique per type), whoever owns it:
    a passkey's credential id names its account."""
    params = {"b_type": factor_type, "b_lookup_key": lookup_key}
    row = (await conn.execute(_BY_LOOKUP_KEY, params)).first()
    return factor_from_row(row._mapping) if row else None


async def list_factors(
    conn: AsyncConnection,
    user_id: str,
    *,
    types: Iterable[str] | None = None,
    active_only: bool = False,
) -> list[StoredFactor]:
    if types is not None and active_only:  # the login path
        params = {"b_user_id": user_id, "b_types": list(types)}
        rows = await conn.execute(_ACTIVE_OF_TYPES, params)
        return [factor_from_row(row._mapping) for row in rows]
    stmt = select(factors).where(factors.c.user_id == user_id)
    if types is not None:
        stmt = stmt.where(factors.c.type.in_(list(types)))
    if active_only:
        stmt = stmt.where(factors.c.status == "active")
    stmt = stmt.order_by(factors.c.created_at, factors.c.id)
    return [factor_from_row(row._mapping) for row in await conn.execute(stmt)]


async def count_active(conn: AsyncConnection, user_id: str, types: Iterable[str]) -> int:
    params = {"b_user_id": user_id, "b_types": list(types)}
    return int((await conn.execute(_COUNT_ACTIVE_OF_TYPES, params)).scalar_one())


async def count_all(conn: AsyncConnection, user_id: str) -> int:
    stmt = select(func.count()).select_from(factors).where(factors.c.user_id == user_id)
    return int((await conn.execute(stmt)).scalar_one())


class DuplicateLookupKey(Exception):
    """Another factor of the same type already holds this lookup key."""


async def activate(
    conn: AsyncConnection,
    factor_id: str,
    now: datetime,
    *,
    data: Mapping[str, Any] | None = None,
    lookup_key: str | None = None,
    counter: int | None = None,
) -> bool:
    """pending → active, once (a second concurrent activation finds nothing to change), with
    what the activation asked to keep."""
    values: dict[str, Any] = {"status": "active", "activated_at": now, "last_used_at": now}
    if data is not None:
        values["data"] = dict(data)
    if lookup_key is not None:
        values["lookup_key"] = lookup_key
    if counter is not None:
        values["counter"] = counter
    stmt = (
        update(factors)
        .where(factors.c.id == factor_id, factors.c.status == "pending")
        .values(**values)
    )
    try:
        return len(await update_returning(conn, stmt, factors.c.id)) == 1
    except IntegrityError as exc:
        raise DuplicateLookupKey(lookup_key) from exc


async def set_label(conn: AsyncConnection, factor_id: str, user_id: str, label: str) -> bool:
    stmt = (
        update(factors)
        .where(factors.c.id == factor_id, factors.c.user_id == user_id)
        .values(label=label)
    )
    return bool((await conn.execute(stmt)).rowcount)


async def delete_factor(conn: AsyncConnection, factor_id: str, user_id: str) -> bool:
    stmt = delete(factors).where(factors.c.id == factor_id, factors.c.user_id == user_id)
    return bool((await conn.execute(stmt)).rowcount)


async def delete_all(conn: AsyncConnection, user_id: str) -> int:
    return int((await conn.execute(delete(factors).where(factors.c.user_id == user_id))).rowcount)


async def secrets_after(
    conn: AsyncConnection, after_id: str, limit: int
) -> list[tuple[str, bytes]]:
    """(id, encrypted secret) of factors with a secret, in id order, for re-encryption."""
    stmt = (
        select(factors.c.id, factors.c.secret)
        .where(and_(factors.c.secret.is_not(None), factors.c.id > after_id))
        .order_by(factors.c.id)
        .limit(limit)
    )
    return [(row.id, bytes(row.secret)) for row in await conn.execute(stmt)]


async def replace_secret(conn: AsyncConnection, factor_id: str, old: bytes, new: bytes) -> bool:
    """Swap a secret's ciphertext, unless someone changed it meanwhile."""
    stmt = (
        update(factors).where(factors.c.id == factor_id, factors.c.secret == old).values(secret=new)
    )
    return bool((await conn.execute(stmt)).rowcount)

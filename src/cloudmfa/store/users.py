"""Users and their roles."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, literal_column, or_, select, union, update
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


def user_from_row(row: Any) -> User:
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
    return user_from_row(row) if row else None


async def lock_for_update(conn: AsyncConnection, user_id: str) -> None:
    """Serialise changes to one user's factors (PostgreSQL row lock; SQLite transactions are
    already serialised by BEGIN IMMEDIATE)."""
    await conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())


async def get_by_id(conn: AsyncConnection, user_id: str) -> User | None:
    row = (await conn.execute(_BY_ID, {"b_id": user_id})).first()
    return user_from_row(row) if row else None


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


# How many accounts, in email order, a search reads before it asks the trigram indexes instead.
SEARCH_WINDOW = 10_000


async def search(
    conn: AsyncConnection,
    *,
    query: str | None,
    after_email: str | None,
    limit: int,
    window: int = SEARCH_WINDOW,
) -> list[User]:
    """Users in email order (the addresses' code points, on every database), keyset-paginated
    (``after_email`` is the last one seen); with a query, those whose email or display name
    contains it, case-insensitively.

    Two plans answer a search fast, and no one plan answers every search fast: reading the
    accounts in email order until the page is full (fast when matches are dense where the page
    starts), or fetching the matches from indexes and sorting them (fast when matches are few).
    PostgreSQL picks between them assuming the matches spread evenly over the email order;
    when they all sort late (``bench-09`` at a million users) it read 900,000 accounts to fill
    a page: a second. So the search does both in turn, each bounded: the next ``window``
    accounts in email order first; if the page is not full and accounts are left after them,
    the first matches past the window (``_first_matches_on_postgres`` says how PostgreSQL
    finds them without sorting every match). Measured at a million users in bench/README.md,
    "Matches that all sort late" and "…, again"."""
    email = _email_order(conn)
    if not query:
        stmt = select(users).order_by(email).limit(limit)
        if after_email is not None:
            stmt = stmt.where(email > after_email)
        return [user_from_row(row) for row in await conn.execute(stmt)]
    query = query.lower()
    pattern = "%" + _like_escaped(query) + "%"
    found = await _matches_in_window(conn, pattern, after_email, limit, window)
    if len(found) == limit:
        return found
    window_end = await _email_ending_window(conn, after_email, window)
    if window_end is None:  # the window reached the last account: that was every match
        return found
    return found + await _matches_past(conn, query, pattern, window_end, limit - len(found))


def _email_order(conn: AsyncConnection, table: Any = users) -> Any:
    """The email as the search orders and compares it: by code point. SQLite (BINARY) and
    MariaDB/MySQL (the tables' ``utf8mb4_bin``) compare the column so already; PostgreSQL
    compares it by the database's collation, often a language's, so the search says ``COLLATE
    "C"``, which ``ix_users_email_by_code_point`` (migration 0008) serves."""
    if conn.dialect.name == "postgresql":
        return table.c.email.collate("C")
    return table.c.email


def _matching(table: Any, pattern: str) -> Any:
    return or_(
        table.c.email.like(pattern, escape="\\"),
        func.lower(table.c.display_name).like(pattern, escape="\\"),
    )


async def _matches_in_window(
    conn: AsyncConnection, pattern: str, after_email: str | None, limit: int, window: int
) -> list[User]:
    """The matches among the next ``window`` accounts in email order (a walk of the email
    index that stops at the page's last match or at the window's end)."""
    email = _email_order(conn)
    next_accounts = select(users).order_by(email).limit(window)
    if after_email is not None:
        next_accounts = next_accounts.where(email > after_email)
    accounts = next_accounts.subquery("window")
    stmt = (
        select(accounts)
        .where(_matching(accounts, pattern))
        .order_by(_email_order(conn, accounts))
        .limit(limit)
    )
    return [user_from_row(row) for row in await conn.execute(stmt)]


async def _email_ending_window(
    conn: AsyncConnection, after_email: str | None, window: int
) -> str | None:
    """The last email of that window; None when fewer accounts are left than it holds."""
    email = _email_order(conn)
    stmt = select(users.c.email).order_by(email).offset(window - 1).limit(1)
    if after_email is not None:
        stmt = stmt.where(email > after_email)
    last: str | None = (await conn.execute(stmt)).scalar_one_or_none()
    return last


async def _matches_past(
    conn: AsyncConnection, query: str, pattern: str, after_email: str, limit: int
) -> list[User]:
    """The first matches past ``after_email``, in email order. MariaDB/MySQL and SQLite have no
    trigram index: they read the accounts. PostgreSQL answers from its indexes."""
    if conn.dialect.name == "postgresql":
        stmt = _first_matches_on_postgres(query, pattern, after_email, limit)
    else:
        stmt = (
            select(users)
            .where(_matching(users, pattern), users.c.email > after_email)
            .order_by(users.c.email)
            .limit(limit)
        )
    return [user_from_row(row) for row in await conn.execute(stmt)]


def _first_matches_on_postgres(query: str, pattern: str, after_email: str, limit: int) -> Any:
    """The first ``limit`` matches past ``after_email`` as one statement, from two parts that
    are each cheap where the other is not:

    - the addresses that start with the query: by code point, one range of
      ``ix_users_email_by_code_point``, read in order and only as far as the page needs,
      however many addresses share that beginning (``bench-09`` starts 100,000 of a million,
      all sorting last: 0.8 ms in ``EXPLAIN ANALYZE``, where fetching and sorting them all took
      224 ms on the same loaded machine, and the CPU per HTTP request fell from 109 to 23 ms);
    - the addresses that hold the query further in (``substr(email, 2)``) and the display
      names that hold it: fetched as a set from the trigram indexes (migrations 0006, 0008)
      and sorted, their first ones kept. The sort key is ``email || ''``: the same order, but
      an expression no index hands over, so PostgreSQL cannot choose to walk an email index
      looking for them (the plan that read 900,000 accounts). Only ids and emails are sorted.

    The page is the first ``limit`` of both parts together (an account in both counts once),
    then read whole by id. What stays costly is a query that many addresses or names hold
    further in, all past the window: that part costs about the trigram scan of its matches
    (``ench-09``, inside 100,000 addresses: 190 ms). Without parallel workers it cost as much
    CPU at 4 concurrent searches, so the statement keeps PostgreSQL's choice. Commands, figures
    and load averages: bench/README.md, "Matches that all sort late, again"."""
    email = users.c.email.collate("C")
    starting = select(users.c.id, email.label("email_order")).where(
        email >= query,
        users.c.email.like(_like_escaped(query) + "%", escape="\\"),
        email > after_email,
    )
    bound = least_string_after_prefix(query)
    if bound is not None:
        starting = starting.where(email < bound)
    inside = select(users.c.id, email.label("email_order")).where(
        or_(
            # literal_column: the index's expression is substr(email, 2), with a constant
            func.substr(users.c.email, literal_column("2")).like(pattern, escape="\\"),
            func.lower(users.c.display_name).like(pattern, escape="\\"),
        ),
        email > after_email,
    )
    page = union(
        starting.order_by(email).limit(limit),
        inside.order_by(users.c.email.concat("").collate("C")).limit(limit),
    ).subquery("page")
    return select(users).join(page, users.c.id == page.c.id).order_by(email).limit(limit)


def least_string_after_prefix(prefix: str) -> str | None:
    """The least string, in code point order, that is greater than every string starting with
    ``prefix``: its last character incremented (UTF-16 surrogates skipped: no text holds
    them), or, when that is the last code point, the same done to the characters before it.
    None when there is no such string (every character the last code point, or no prefix)."""
    kept = prefix
    while kept:
        last = ord(kept[-1])
        kept = kept[:-1]
        if last < sys.maxunicode:
            following = last + 1
            if 0xD800 <= following <= 0xDFFF:
                following = 0xE000
            return kept + chr(following)
    return None


def _like_escaped(text: str) -> str:
    """``text`` with LIKE's wildcards and escape character taken literally (escape ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

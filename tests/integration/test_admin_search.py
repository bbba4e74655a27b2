"""The admin search (store/users.search) on each database: a page in email order (by code
point, on every database) of the users whose email or display name contains the query,
whichever of its two bounded steps finds them (a window of accounts read in email order, then
the first matches past it: on PostgreSQL the addresses that start with the query read in order,
and the others fetched as a set and sorted). Here the window is a few accounts, so that matches
sorting past it, before it, and on both sides of it are all found, in order, page after page,
exactly as a plain filter and sort of every account would give them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudmfa.config import normalise_database_url
from cloudmfa.store import users as user_repo
from cloudmfa.store.db import create_engine
from cloudmfa.store.migrate import upgrade_to_head
from cloudmfa.store.models import users
from conftest import ALL_BACKENDS

BACKENDS = ALL_BACKENDS
WINDOW = 4  # accounts read in email order before the search asks for the matches as a set

# Emails in order: early non-matches, then matches only late ("zz-late-…"), and a display
# name that matches from the middle; "a_b%" checks that LIKE's wildcards in a query are text.
NAMES = [
    *(f"aa-{i:02d}@example.com" for i in range(10)),
    *(f"mm-{i:02d}@example.com" for i in range(6)),
    *(f"zz-late-{i:02d}@example.com" for i in range(7)),
    "a_b%x@example.com",
    "axbyx@example.com",
]
DISPLAY = {"mm-03@example.com": "Late Bloomer", "aa-05@example.com": "Someone ZZ-LATE"}


@pytest_asyncio.fixture(scope="module")
async def engine(backend: dict[str, Any]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(normalise_database_url(backend["database_url"]))
    await upgrade_to_head(engine)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        for email in NAMES:
            user = user_repo.User(
                id=str(uuid.uuid4()),
                email=email,
                display_name=DISPLAY.get(email),
                password_hash="x",
                roles=(),
                locked_at=None,
                created_at=now,
            )
            await user_repo.insert_user(conn, user)
    yield engine
    await engine.dispose()


async def in_email_order(engine: AsyncEngine) -> list[str]:
    """Every email, by code point (how Python compares strings): the search's order on every
    database, whatever PostgreSQL's collation."""
    async with engine.connect() as conn:
        return sorted((await conn.execute(select(users.c.email))).scalars())


async def expected(engine: AsyncEngine, query: str) -> list[str]:
    q = query.lower()
    return [
        e for e in await in_email_order(engine) if q in e or q in (DISPLAY.get(e) or "").lower()
    ]


async def pages(engine: AsyncEngine, query: str, limit: int, window: int) -> list[list[str]]:
    found: list[list[str]] = []
    after = None
    async with engine.connect() as conn:
        while True:
            page = await user_repo.search(
                conn, query=query, after_email=after, limit=limit, window=window
            )
            found.append([u.email for u in page])
            if len(page) < limit:
                return found
            after = page[-1].email


@pytest.mark.parametrize(
    "query", ["zz-late", "late", "mm-0", "example.com", "a_b%", "nobody", "a", "zz", "x@"]
)
@pytest.mark.parametrize("limit", [1, 3, 50])
async def test_every_match_comes_once_in_email_order(
    engine: AsyncEngine, query: str, limit: int
) -> None:
    found = await pages(engine, query, limit, WINDOW)
    assert [e for page in found for e in page] == await expected(engine, query)
    assert all(len(page) == limit for page in found[:-1])
    assert len(found[-1]) < limit  # a short page is the last


async def test_matches_that_all_sort_past_the_window_are_found(engine: AsyncEngine) -> None:
    """The case the second step exists for: the first window holds no match at all."""
    late = await expected(engine, "zz-late")
    assert len(late) == 8  # seven emails and one display name
    assert not set(late) & set((await in_email_order(engine))[:WINDOW])
    assert await pages(engine, "zz-late", 50, WINDOW) == [late]


async def test_the_default_window_answers_the_same(engine: AsyncEngine) -> None:
    for query in ("late", "example.com", "nobody"):
        assert await pages(engine, query, 3, user_repo.SEARCH_WINDOW) == await pages(
            engine, query, 3, WINDOW
        )

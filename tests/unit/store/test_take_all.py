"""``take_all`` (a send's cooldown and hourly counts in one step), ``decr_if_exists`` of several
keys (their give-back) and ``count_then_set`` (an attempt's count of sends and its kept code),
on both ephemeral stores: the in-process one, and the real Redis through redis-py."""

from __future__ import annotations

import asyncio

from cloudmfa.store.ephemeral import (
    Cooldown,
    EphemeralStore,
    Refusal,
    Reservation,
)

DESTINATION = Reservation("dest", ttl_s=3600, limit=3)
COUNTRY = Reservation("country", ttl_s=3600, limit=5)
GLOBAL = Reservation("global", ttl_s=3600, limit=10)
COOLDOWN = Cooldown("cooldown", ttl_s=30)


async def counts(store: EphemeralStore, *reservations: Reservation) -> list[str | None]:
    return [await store.get(r.key) for r in reservations]


async def test_takes_one_unit_of_each_and_starts_their_hour(store: EphemeralStore) -> None:
    assert await store.take_all([DESTINATION, COUNTRY, GLOBAL]) is None
    assert await store.take_all([DESTINATION, COUNTRY, GLOBAL]) is None

    assert await counts(store, DESTINATION, COUNTRY, GLOBAL) == ["2", "2", "2"]
    for reservation in (DESTINATION, COUNTRY, GLOBAL):
        assert 3590 <= await store.ttl(reservation.key) <= 3600


async def test_a_spent_count_refuses_and_every_count_is_left_as_it_was(
    store: EphemeralStore,
) -> None:
    for _ in range(5):
        assert await store.take_all([COUNTRY]) is None  # the country's budget is spent
    assert await store.take_all([DESTINATION]) is None

    refusal = await store.take_all([DESTINATION, COUNTRY, GLOBAL])

    assert isinstance(refusal, Refusal)
    assert refusal.refused_by == COUNTRY  # not the destination taken before it
    assert 3590 <= refusal.retry_after <= 3600
    assert await counts(store, DESTINATION, COUNTRY, GLOBAL) == ["1", "5", None]


async def test_the_first_count_refusing_is_named(store: EphemeralStore) -> None:
    for _ in range(3):
        assert await store.take_all([DESTINATION, COUNTRY]) is None

    refusal = await store.take_all([DESTINATION, COUNTRY])

    assert refusal is not None and refusal.refused_by == DESTINATION
    assert await counts(store, DESTINATION, COUNTRY) == ["3", "3"]


async def test_a_running_cooldown_refuses_before_any_count_is_touched(
    store: EphemeralStore,
) -> None:
    assert await store.take_all([DESTINATION, GLOBAL], cooldown=COOLDOWN) is None

    for _ in range(5):
        refusal = await store.take_all([DESTINATION, GLOBAL], cooldown=COOLDOWN)
        assert refusal is not None and refusal.refused_by == COOLDOWN
        assert 1 <= refusal.retry_after <= 30

    assert await counts(store, DESTINATION, GLOBAL) == ["1", "1"]


async def test_a_refusing_count_leaves_the_cooldown_started(store: EphemeralStore) -> None:
    for _ in range(3):
        assert await store.take_all([DESTINATION]) is None

    refusal = await store.take_all([DESTINATION], cooldown=COOLDOWN)

    assert refusal is not None and refusal.refused_by == DESTINATION
    assert await store.get(COOLDOWN.key) is not None
    assert 1 <= await store.ttl(COOLDOWN.key) <= 30


async def test_parallel_takes_never_overspend_and_refusals_cost_nothing(
    store: EphemeralStore,
) -> None:
    results = await asyncio.gather(
        *(store.take_all([DESTINATION, COUNTRY, GLOBAL]) for _ in range(20))
    )

    assert sum(r is None for r in results) == 3  # the destination's limit
    assert {r.refused_by for r in results if r is not None} == {DESTINATION}
    assert await counts(store, DESTINATION, COUNTRY, GLOBAL) == ["3", "3", "3"]


async def test_parallel_sends_for_one_factor_inside_its_cooldown_take_once(
    store: EphemeralStore,
) -> None:
    results = await asyncio.gather(
        *(store.take_all([DESTINATION, GLOBAL], cooldown=COOLDOWN) for _ in range(10))
    )

    assert sum(r is None for r in results) == 1
    assert await counts(store, DESTINATION, GLOBAL) == ["1", "1"]


async def test_giving_back_several_units_creates_no_counter(store: EphemeralStore) -> None:
    assert await store.take_all([DESTINATION, GLOBAL]) is None
    assert await store.take_all([DESTINATION, GLOBAL]) is None

    await store.decr_if_exists(DESTINATION.key, GLOBAL.key, "never-counted")

    assert await counts(store, DESTINATION, GLOBAL) == ["1", "1"]
    assert await store.get("never-counted") is None
    assert 3590 <= await store.ttl(DESTINATION.key) <= 3600  # its hour goes on


async def test_count_then_set_sets_only_within_the_limit(store: EphemeralStore) -> None:
    for expected in (1, 2):
        count = await store.count_then_set(
            "sends", limit=2, key="kept", value=f"code {expected}", ttl_s=300
        )
        assert count == expected
        assert await store.get("kept") == f"code {expected}"

    count = await store.count_then_set("sends", limit=2, key="kept", value="code 3", ttl_s=300)

    assert count == 3
    assert await store.get("kept") == "code 2"  # the last code sent stays the one that counts
    assert 1 <= await store.ttl("sends") <= 300
    assert 1 <= await store.ttl("kept") <= 300

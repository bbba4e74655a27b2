"""The in-process ephemeral store: fixed-window counters, expiry by the injected clock,
single-use pop and set-if-absent, and atomic increments under concurrency."""

from __future__ import annotations

import asyncio

import pytest

from cloudmfa.clock import FrozenClock
from cloudmfa.store.ephemeral import MemoryStore


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def store(clock: FrozenClock) -> MemoryStore:
    return MemoryStore(clock)


# --- counters -----------------------------------------------------------------------------


async def test_incr_counts_up_from_one(store: MemoryStore) -> None:
    assert [await store.incr("fails:alice", 60) for _ in range(3)] == [1, 2, 3]
    assert await store.get("fails:alice") == "3"


async def test_incr_keeps_separate_counters_per_key(store: MemoryStore) -> None:
    await store.incr("a", 60)
    await store.incr("a", 60)
    assert await store.incr("b", 60) == 1


async def test_incr_ttl_starts_at_first_increment(store: MemoryStore, clock: FrozenClock) -> None:
    await store.incr("k", 60)
    assert await store.ttl("k") == 60
    clock.advance(seconds=20)
    assert await store.ttl("k") == 40


async def test_later_increments_do_not_extend_the_window(
    store: MemoryStore, clock: FrozenClock
) -> None:
    await store.incr("k", 60)
    clock.advance(seconds=30)
    assert await store.incr("k", 60) == 2
    assert await store.ttl("k") == 30  # not reset to 60
    clock.advance(seconds=29)
    assert await store.incr("k", 600) == 3  # a longer ttl on a later call changes nothing
    assert await store.ttl("k") == 1
    clock.advance(seconds=1)
    assert await store.get("k") is None
    assert await store.ttl("k") == 0


async def test_counter_starts_a_fresh_window_after_expiry(
    store: MemoryStore, clock: FrozenClock
) -> None:
    for _ in range(5):
        await store.incr("k", 60)
    clock.advance(seconds=60)
    assert await store.incr("k", 60) == 1
    assert await store.ttl("k") == 60


async def test_ttl_rounds_a_partial_second_up(store: MemoryStore, clock: FrozenClock) -> None:
    await store.set("k", "v", 10)
    clock.advance(seconds=9.5)
    assert await store.ttl("k") == 1


async def test_ttl_of_missing_key_is_zero(store: MemoryStore) -> None:
    assert await store.ttl("missing") == 0


async def test_fifty_concurrent_increments_give_each_count_once(store: MemoryStore) -> None:
    results = await asyncio.gather(*(store.incr("burst", 60) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await store.get("burst") == "50"


# --- values and expiry --------------------------------------------------------------------


async def test_set_value_is_readable_until_its_ttl_passes(
    store: MemoryStore, clock: FrozenClock
) -> None:
    await store.set("k", "v", 10)
    clock.advance(seconds=9)
    assert await store.get("k") == "v"
    assert await store.exists_any("k")
    clock.advance(seconds=1)
    assert await store.get("k") is None
    assert not await store.exists_any("k")


async def test_set_overwrites_value_and_ttl(store: MemoryStore, clock: FrozenClock) -> None:
    await store.set("k", "old", 10)
    await store.set("k", "new", 100)
    clock.advance(seconds=50)
    assert await store.get("k") == "new"


async def test_exists_any_is_true_when_one_key_is_live(store: MemoryStore) -> None:
    await store.set("revoked:s2", "1", 60)
    assert await store.exists_any("revoked:s1", "revoked:s2")
    assert not await store.exists_any("revoked:s1", "revoked:s3")
    assert not await store.exists_any()


async def test_delete_removes_every_named_key(store: MemoryStore) -> None:
    await store.set("a", "1", 60)
    await store.set("b", "2", 60)
    await store.set("c", "3", 60)
    await store.delete("a", "b", "missing")
    assert await store.get("a") is None and await store.get("b") is None
    assert await store.get("c") == "3"


# --- single use ---------------------------------------------------------------------------


async def test_pop_hands_a_value_out_once(store: MemoryStore) -> None:
    await store.set("mfa:token", "user-1", 300)
    assert await store.pop("mfa:token") == "user-1"
    assert await store.pop("mfa:token") is None
    assert await store.get("mfa:token") is None


async def test_pop_of_expired_value_returns_nothing(store: MemoryStore, clock: FrozenClock) -> None:
    await store.set("k", "v", 10)
    clock.advance(seconds=10)
    assert await store.pop("k") is None


async def test_concurrent_pops_hand_the_value_to_exactly_one(store: MemoryStore) -> None:
    await store.set("reset:token", "user-1", 300)
    results = await asyncio.gather(*(store.pop("reset:token") for _ in range(20)))
    assert results.count("user-1") == 1
    assert results.count(None) == 19


async def test_set_if_absent_succeeds_only_for_the_first_writer(store: MemoryStore) -> None:
    assert await store.set_if_absent("totp:step", "first", 60) is True
    assert await store.set_if_absent("totp:step", "second", 60) is False
    assert await store.get("totp:step") == "first"


async def test_set_if_absent_succeeds_again_once_the_value_expired(
    store: MemoryStore, clock: FrozenClock
) -> None:
    await store.set_if_absent("k", "first", 30)
    clock.advance(seconds=30)
    assert await store.set_if_absent("k", "second", 30) is True
    assert await store.get("k") == "second"


async def test_concurrent_set_if_absent_has_exactly_one_winner(store: MemoryStore) -> None:
    results = await asyncio.gather(*(store.set_if_absent("once", str(i), 60) for i in range(20)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert await store.get("once") == str(winner)


async def test_ping_and_close_are_harmless(store: MemoryStore) -> None:
    await store.ping()
    await store.close()

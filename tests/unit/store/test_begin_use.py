"""``begin_use`` and ``pop_and_delete``, the two steps around a second-factor verification,
on both ephemeral stores (the in-process one, and the real Redis through redis-py)."""

from __future__ import annotations

from typing import Any

from cloudmfa.store.ephemeral import EphemeralStore, Reservation


async def begin(store: EphemeralStore, **extra: Any) -> tuple[str | None, int]:
    use = await store.begin_use(
        "token", counter="tries", lease="lease", ttl_s=300, lease_s=10, **extra
    )
    return use.value, use.uses


async def test_a_missing_key_takes_no_lease_and_counts_nothing(store: EphemeralStore) -> None:
    assert await begin(store) == (None, 0)
    assert await store.get("lease") is None
    assert await store.get("tries") is None


async def test_takes_the_lease_and_counts_the_try(store: EphemeralStore) -> None:
    await store.set("token", "state", 300)
    assert await begin(store) == ("state", 1)
    assert await store.get("lease") is not None
    assert 0 < await store.ttl("lease") <= 10


async def test_a_held_lease_refuses_without_counting(store: EphemeralStore) -> None:
    await store.set("token", "state", 300)
    await begin(store)
    assert await begin(store) == ("state", 0)
    assert await begin(store) == ("state", 0)
    await store.delete("lease")  # the first verification ended
    assert await begin(store) == ("state", 2)


async def test_pop_and_delete_spends_the_key_and_clears_the_others(store: EphemeralStore) -> None:
    await store.set("token", "state", 300)
    await begin(store)
    await store.incr("account", 900)
    assert await store.pop_and_delete("token", "account", "lease") == "state"
    assert await store.exists_any("token", "account", "lease") is False
    assert await store.pop_and_delete("token", "account", "lease") is None


async def test_reserves_a_unit_of_the_limited_count_in_the_same_step(
    store: EphemeralStore,
) -> None:
    await store.set("token", "state", 300)
    reserve = Reservation("account", ttl_s=900, limit=2)
    for expected in (1, 2):
        use = await store.begin_use(
            "token", counter="tries", lease="lease", ttl_s=300, lease_s=10, reserve=reserve
        )
        assert (use.uses, use.reserved, use.retry_after) == (expected, True, 0)
        assert await store.incr("account", 900) - 1 == expected  # and look
        await store.decr_if_exists("account")
        await store.delete("lease")

    use = await store.begin_use(
        "token", counter="tries", lease="lease", ttl_s=300, lease_s=10, reserve=reserve
    )

    assert (use.uses, use.reserved) == (3, False)
    assert 0 < use.retry_after <= 900
    assert await store.incr("account", 900) == 3  # the refusal left the count at its limit


async def test_a_use_past_its_maximum_reserves_nothing(store: EphemeralStore) -> None:
    await store.set("token", "state", 300)
    reserve = Reservation("account", ttl_s=900, limit=10)
    for _ in range(3):
        use = await store.begin_use(
            "token",
            counter="tries",
            lease="lease",
            ttl_s=300,
            lease_s=10,
            max_uses=2,
            reserve=reserve,
        )
        await store.delete("lease")
    assert (use.uses, use.reserved, use.retry_after) == (3, False, 0)
    assert await store.incr("account", 900) == 3  # two reserved, then this look


async def test_a_held_lease_or_a_missing_key_reserves_nothing(store: EphemeralStore) -> None:
    reserve = Reservation("account", ttl_s=900, limit=10)
    assert await begin(store, reserve=reserve) == (None, 0)
    await store.set("token", "state", 300)
    await store.set("lease", "1", 10)
    assert await begin(store, reserve=reserve) == ("state", 0)
    assert await store.get("account") is None


async def test_set_and_release_sets_and_gives_back_one_unit(store: EphemeralStore) -> None:
    await store.incr("account", 900)
    await store.incr("account", 900)

    await store.set_and_release("attempt", "state", 300, counter="account")

    assert await store.get("attempt") == "state"
    assert 0 < await store.ttl("attempt") <= 300
    assert await store.incr("account", 900) == 2  # 2 - 1, then this look
    await store.set_and_release("other", "x", 300, counter="missing")
    assert await store.get("missing") is None  # no counter is created

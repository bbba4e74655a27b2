"""RedisStore on redis-py, against the real Redis the suite uses: replies as text, scripts
loaded again after the server forgot them, a dropped connection replaced, and an absent or
broken Redis reported as a ConnectionError (503 `unavailable` at the edge), not a 500."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from cloudmfa.delivery.base import Message
from cloudmfa.flows.send_limits import cooldown_key, destination_key, sms_budget_key, sms_country
from cloudmfa.security.throttle import account_key, account_tag
from cloudmfa.store.ephemeral import (
    RedisStore,
    RedisUnavailable,
    closed_under_the_command,
    reporting_unavailable,
)
from cloudmfa.store.login_attempts import (
    _kept_key,
    _lease_key,
    _sends_key,
    _token_key,
    _tries_key,
)
from conftest import REDIS_URL, drop_redis_prefix
from support import free_port


@pytest_asyncio.fixture
async def store() -> AsyncIterator[RedisStore]:
    prefix = f"test-redis-store-{secrets.token_hex(4)}:"
    redis_store = RedisStore(REDIS_URL, prefix=prefix)
    yield redis_store
    await redis_store.close()
    await drop_redis_prefix(prefix)


async def test_values_come_back_as_text_and_missing_ones_as_none(store: RedisStore) -> None:
    await store.set("a", "héllo", 60)
    assert await store.get("a") == "héllo"
    assert await store.get("missing") is None
    assert await store.pop("a") == "héllo"
    assert await store.pop("a") is None


async def test_set_if_absent_takes_a_key_once(store: RedisStore) -> None:
    assert await store.set_if_absent("once", "1", 60) is True
    assert await store.set_if_absent("once", "2", 60) is False
    assert await store.get("once") == "1"
    assert 0 < await store.ttl("once") <= 60
    assert await store.ttl("missing") == 0


async def test_a_counter_starts_its_life_on_the_first_increment_only(store: RedisStore) -> None:
    assert await store.incr("n", 60) == 1
    await store.redis.expire(store._k("n"), 1000)  # a later increment must not reset it
    assert await store.incr("n", 60) == 2
    assert await store.ttl("n") > 60
    await store.decr_if_exists("n")
    assert await store.get("n") == "1"
    await store.decr_if_exists("never-created")
    assert await store.get("never-created") is None


async def test_concurrent_increments_are_each_counted_once(store: RedisStore) -> None:
    counts = await asyncio.gather(*(store.incr("burst", 60) for _ in range(200)))
    assert sorted(counts) == list(range(1, 201))


async def test_exists_any_and_delete_take_several_keys(store: RedisStore) -> None:
    await store.set("x", "1", 60)
    assert await store.exists_any("nope", "x") is True
    await store.delete("x", "nope")
    assert await store.exists_any("nope", "x") is False


async def test_pop_and_delete_spends_once_and_clears_the_others_either_way(
    store: RedisStore,
) -> None:
    await store.set("token", "state", 60)
    await store.set("other", "1", 60)
    spent = await asyncio.gather(*(store.pop_and_delete("token", "other") for _ in range(20)))
    assert spent.count("state") == 1
    assert spent.count(None) == 19
    assert await store.exists_any("token", "other") is False


async def test_scripts_are_loaded_again_when_the_server_forgot_them(store: RedisStore) -> None:
    assert await store.incr("n", 60) == 1
    await store.redis.script_flush()  # as after a Redis restart or failover
    assert await store.incr("n", 60) == 2
    await store.set("token", "state", 60)
    began = await store.begin_use("token", counter="tries", lease="lease", ttl_s=60, lease_s=5)
    assert (began.value, began.uses) == ("state", 1)


async def test_a_command_error_is_not_reported_as_redis_being_down(store: RedisStore) -> None:
    await store.set("text", "not a number", 60)
    with pytest.raises(ResponseError, match="not an integer"):
        await store.incr("text", 60)


async def test_a_connection_redis_dropped_is_replaced_without_an_error(store: RedisStore) -> None:
    await store.set("k", "v", 60)
    own = await store.redis.client_id()
    admin = Redis.from_url(REDIS_URL)
    try:
        assert await admin.client_kill_filter(_id=own) == 1
    finally:
        await admin.aclose()
    assert await store.get("k") == "v"
    assert await store.redis.client_id() != own


async def test_an_unreachable_redis_is_a_connection_error_naming_it() -> None:
    port = free_port()
    absent = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="never:")
    try:
        for call in (
            absent.ping(),
            absent.get("k"),
            absent.set("k", "v", 1),
            absent.incr("k", 1),
            absent.pop_and_delete("k", "other"),
            absent.begin_use("k", counter="c", lease="l", ttl_s=1, lease_s=1),
        ):
            with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}"):
                await call
        assert issubclass(RedisUnavailable, ConnectionError)  # the edge's 503 handler
    finally:
        await absent.close()


def test_an_mfa_tokens_keys_share_one_cluster_slot() -> None:
    """begin_use's script touches the attempt, its tries, its lease and the account's failure
    count, and spending the attempt clears the rest: on a Redis Cluster all must hash to one
    slot, whatever the prefix (without braces of its own)."""
    tag = account_tag("ada@example.com")
    attempt_id = f"{tag}:{secrets.token_hex(32)}"
    keys = [f"cloudmfa:{make(attempt_id)}" for make in (_token_key, _tries_key, _lease_key)]
    keys += [f"cloudmfa:{_sends_key(attempt_id)}", f"cloudmfa:{_kept_key(attempt_id, 'f1')}"]
    keys += [f"cloudmfa:{account_key('ada@example.com')}"]  # the account's failures too
    assert len({key_slot(key.encode()) for key in keys}) == 1


def test_a_sends_limit_keys_share_one_cluster_slot() -> None:
    """take_all's script starts a factor's cooldown and counts the destination and the SMS
    budgets: on a Redis Cluster, the keys of any two messages and factors hash to one slot."""
    text = Message("sms", "+14155550100", "Your code", "123456")
    mail = Message("email", "ada@example.com", "Your code", "123456")
    keys = [destination_key(text), destination_key(mail), sms_budget_key(sms_country(text.to))]
    keys += [sms_budget_key("FR"), sms_budget_key("*")]
    keys += [cooldown_key(str(uuid.uuid4())) for _ in range(2)]
    assert len({key_slot(f"cloudmfa:{key}".encode()) for key in keys}) == 1


async def _redis_py_with_its_connection_closed() -> None:
    """What redis-py raises when another task closed the connection it was about to write on
    (a Cluster client resetting itself): its writer is None."""
    from redis.asyncio.connection import Connection

    await Connection()._send_packed_command([b"PING\r\n"])


async def test_a_connection_closed_under_a_command_by_redis_py_is_unavailable() -> None:
    with pytest.raises(AttributeError, match="writelines") as raised:
        await _redis_py_with_its_connection_closed()
    assert closed_under_the_command(raised.value)
    with pytest.raises(RedisUnavailable, match="closed by a cluster reset"):
        with reporting_unavailable:
            await _redis_py_with_its_connection_closed()


async def test_an_attribute_error_of_our_own_stays_a_bug() -> None:
    """Only redis-py's own AttributeError is a failover: one raised in our code is a 500."""
    writer: Any = None
    with pytest.raises(AttributeError) as raised:
        writer.writelines([b"PING\r\n"])
    assert not closed_under_the_command(raised.value)
    with pytest.raises(AttributeError):
        with reporting_unavailable:
            writer.writelines([b"PING\r\n"])

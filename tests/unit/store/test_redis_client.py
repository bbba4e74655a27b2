"""The lean Redis client, against the real Redis the suite uses: replies matched to callers on
one pipelined connection (also when a caller gives up), scripts loaded on demand, and recovery
from a killed connection, a server that does not answer, and a server that is not there."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
import uvloop

from cloudmfa.store.redis_client import (
    RedisAddress,
    RedisClient,
    RedisConnectionError,
    RedisError,
    Script,
)
from conftest import REDIS_URL, drop_redis_prefix
from support import free_port


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-client-{secrets.token_hex(4)}:"
    yield prefix
    await drop_redis_prefix(prefix)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[RedisClient]:
    client = RedisClient(REDIS_URL, timeout_s=5)
    yield client
    await client.close()


# --- addresses ------------------------------------------------------------------------------


def test_reads_host_port_database_and_credentials_from_a_url() -> None:
    address = RedisAddress.from_url("redis://app:p%40ss@cache.internal:6380/3")
    assert address == RedisAddress(
        host="cache.internal", port=6380, db=3, username="app", password="p@ss", tls=False
    )


def test_rediss_means_tls_and_a_password_alone_needs_no_user() -> None:
    address = RedisAddress.from_url("rediss://:secret@cache.internal")
    assert (address.tls, address.username, address.password, address.port) == (
        True,
        None,
        "secret",
        6379,
    )


def test_reads_a_unix_socket_url() -> None:
    address = RedisAddress.from_url("unix:///run/redis/redis.sock?db=2")
    assert (address.unix_path, address.db) == ("/run/redis/redis.sock", 2)


@pytest.mark.parametrize("url", ["http://cache:6379", "redis://cache:6379/zero"])
def test_refuses_what_is_not_a_redis_url(url: str) -> None:
    with pytest.raises(ValueError):
        RedisAddress.from_url(url)


# --- commands and replies -------------------------------------------------------------------


async def test_returns_strings_integers_lists_and_none(client: RedisClient, prefix: str) -> None:
    assert await client.execute("SET", prefix + "a", "héllo") == "OK"
    assert await client.execute("GET", prefix + "a") == "héllo"
    assert await client.execute("INCR", prefix + "n") == 1
    assert await client.execute("GET", prefix + "missing") is None
    assert await client.execute("MGET", prefix + "a", prefix + "missing") == ["héllo", None]


def test_works_on_uvloop_the_servers_event_loop() -> None:
    async def roundtrip() -> str:
        uv_client = RedisClient(REDIS_URL)
        try:
            return str(await uv_client.execute("ECHO", "on uvloop"))
        finally:
            await uv_client.close()

    assert uvloop.run(roundtrip()) == "on uvloop"


async def test_an_error_reply_raises_and_leaves_the_connection_usable(
    client: RedisClient, prefix: str
) -> None:
    await client.execute("SET", prefix + "text", "not a number")
    with pytest.raises(RedisError, match="not an integer"):
        await client.execute("INCR", prefix + "text")
    assert await client.execute("PING") == "PONG"


async def test_concurrent_callers_each_get_their_own_reply(
    client: RedisClient, prefix: str
) -> None:
    for i in range(300):
        await client.execute("SET", f"{prefix}k{i}", f"v{i}")
    replies = await asyncio.gather(*(client.execute("GET", f"{prefix}k{i}") for i in range(300)))
    assert replies == [f"v{i}" for i in range(300)]


class _CountingTransport:
    """Stands in front of the connection's transport and counts its writes."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


async def test_commands_sent_in_one_turn_of_the_loop_leave_in_one_write(
    client: RedisClient, prefix: str
) -> None:
    await client.execute("PING")  # connected
    connection = client._connection
    assert connection is not None and connection.transport is not None
    counting = _CountingTransport(connection.transport)
    connection.transport = counting  # type: ignore[assignment]
    replies = await asyncio.gather(*(client.execute("INCR", prefix + "n") for _ in range(50)))
    assert sorted(replies) == list(range(1, 51))
    assert len(counting.writes) == 1
    assert counting.writes[0].count(b"INCR") == 50
    # A command on its own still goes out at once, in a write of its own.
    assert await client.execute("GET", prefix + "n") == "50"
    assert len(counting.writes) == 2


class _FailingTransport(_CountingTransport):
    def write(self, data: bytes) -> None:
        raise OSError("the socket is gone")


async def test_a_write_that_fails_fails_its_commands_at_once_and_the_next_one_reconnects(
    prefix: str,
) -> None:
    patient = RedisClient(REDIS_URL, timeout_s=30)
    try:
        await patient.execute("PING")
        connection = patient._connection
        assert connection is not None and connection.transport is not None
        connection.transport = _FailingTransport(connection.transport)  # type: ignore[assignment]
        with pytest.raises(RedisConnectionError, match="could not write to Redis"):
            async with asyncio.timeout(5):  # not the client's 30 s timeout
                await patient.execute("GET", prefix + "x")
        assert await patient.execute("PING") == "PONG"
    finally:
        await patient.close()


async def test_a_caller_that_gives_up_does_not_shift_the_replies(
    client: RedisClient, prefix: str
) -> None:
    # BLPOP holds the connection for 0.3 s; its reply must go to the cancelled caller's slot,
    # not to the next command queued behind it.
    blocked = asyncio.create_task(client.execute("BLPOP", prefix + "empty", "0.3"))
    await asyncio.sleep(0.05)
    blocked.cancel()
    assert await client.execute("ECHO", "mine") == "mine"
    with pytest.raises(asyncio.CancelledError):
        await blocked


# --- scripts --------------------------------------------------------------------------------


async def test_a_script_is_loaded_when_the_server_does_not_know_it(
    client: RedisClient, prefix: str
) -> None:
    script = Script(f"return redis.call('INCRBY', KEYS[1], ARGV[1]) -- {secrets.token_hex(4)}")
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [0]
    assert await client.run_script(script, [prefix + "c"], [5]) == 5
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
    assert await client.run_script(script, [prefix + "c"], [2]) == 7


async def test_a_failing_script_raises_its_error(client: RedisClient) -> None:
    with pytest.raises(RedisError, match="boom"):
        await client.run_script(Script("return redis.error_reply('boom')"), [], [])


# --- failures -------------------------------------------------------------------------------


async def test_a_killed_connection_fails_what_waits_on_it_and_the_next_command_reconnects(
    client: RedisClient, prefix: str
) -> None:
    first_id = await client.execute("CLIENT", "ID")
    blocked = asyncio.create_task(client.execute("BLPOP", prefix + "empty", "5"))
    await asyncio.sleep(0.05)
    async with _other_client() as other:
        assert await other.execute("CLIENT", "KILL", "ID", first_id) == 1
    with pytest.raises(RedisConnectionError):
        await blocked
    assert await client.execute("PING") == "PONG"
    assert await client.execute("CLIENT", "ID") != first_id


async def test_a_server_that_does_not_answer_in_time_fails_the_command_not_the_client(
    prefix: str,
) -> None:
    impatient = RedisClient(REDIS_URL, timeout_s=0.2)
    try:
        with pytest.raises(RedisConnectionError, match="did not answer within 0.2 s"):
            await impatient.execute("BLPOP", prefix + "empty", "2")
        assert await impatient.execute("PING") == "PONG"
    finally:
        await impatient.close()


async def test_an_unreachable_server_raises_a_connection_error_naming_it() -> None:
    port = free_port()
    absent = RedisClient(f"redis://127.0.0.1:{port}/0", timeout_s=1)
    with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{port}"):
        await absent.execute("PING")


async def test_selects_the_database_of_the_url(client: RedisClient, prefix: str) -> None:
    other_db = RedisClient(REDIS_URL.rsplit("/", 1)[0] + "/5")
    try:
        await other_db.execute("SET", prefix + "where", "db5", "EX", 60)
        assert await client.execute("GET", prefix + "where") is None
        assert await other_db.execute("GET", prefix + "where") == "db5"
        await other_db.execute("DEL", prefix + "where")
    finally:
        await other_db.close()


async def test_a_password_the_server_refuses_is_an_error_at_connect() -> None:
    host = REDIS_URL.split("://", 1)[1].split("/", 1)[0]
    guarded = RedisClient(f"redis://:wrong@{host}/0")
    with pytest.raises(RedisError, match="AUTH|password"):
        await guarded.execute("PING")


@asynccontextmanager
async def _other_client() -> AsyncIterator[RedisClient]:
    other = RedisClient(REDIS_URL)
    try:
        yield other
    finally:
        await other.close()

"""CLOUDMFA_REDIS_URL: every form API.md names is read into the right target, and a URL the
service cannot use is refused with a reason, at start-up (the settings), in one line."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import SSLConnection

from cloudmfa.config import Settings
from cloudmfa.store.redis_url import RedisTarget, connect_redis, parse_redis_url


def test_one_server_keeps_its_url_for_redis_py_and_its_database() -> None:
    target = parse_redis_url("redis://app:p%40ss@cache.internal:6380/3")
    assert (target.kind, target.db, target.tls) == ("server", 3, False)
    pool_options = connect_redis(target).connection_pool.connection_kwargs
    assert pool_options["host"] == "cache.internal"
    assert pool_options["port"] == 6380
    assert (pool_options["username"], pool_options["password"]) == ("app", "p@ss")


def test_rediss_means_tls_verified_against_the_system_cas() -> None:
    target = parse_redis_url("rediss://:secret@cache.internal")
    assert target.tls
    client = connect_redis(target)
    assert isinstance(client, Redis)
    connection = client.connection_pool.make_connection()
    assert isinstance(connection, SSLConnection)
    assert connection.ssl_context.cert_reqs is ssl.CERT_REQUIRED
    assert connection.ssl_context.check_hostname
    assert connection.password == "secret"


def test_reads_a_unix_socket_url() -> None:
    target = parse_redis_url("unix:///run/redis/redis.sock?db=2")
    assert (target.kind, target.db) == ("server", 2)
    options = connect_redis(target).connection_pool.connection_kwargs
    assert options["path"] == "/run/redis/redis.sock"


def test_sentinel_names_its_nodes_service_database_and_the_masters_credentials() -> None:
    target = parse_redis_url("redis+sentinel://app:s%3Acret@s1:26380,s2,[::1]:26381/mymaster/4")
    assert target == RedisTarget(
        kind="sentinel",
        url="redis+sentinel://app:s%3Acret@s1:26380,s2,[::1]:26381/mymaster/4",
        nodes=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service_name="mymaster",
        db=4,
        username="app",
        password="s:cret",
    )
    client = connect_redis(target)
    assert isinstance(client, Redis)
    options = client.connection_pool.connection_kwargs
    assert (options["db"], options["username"], options["password"]) == (4, "app", "s:cret")


def test_sentinel_without_a_database_uses_database_0() -> None:
    assert parse_redis_url("redis+sentinel://s1:26379/mymaster").db == 0


@pytest.mark.parametrize("scheme, tls", [("redis+cluster", False), ("rediss+cluster", True)])
def test_cluster_takes_any_nodes_as_seeds(scheme: str, tls: bool) -> None:
    target = parse_redis_url(f"{scheme}://:pw@n1:7000,n2:7001,n3")
    assert target.kind == "cluster"
    assert target.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert (target.password, target.tls) == ("pw", tls)
    assert isinstance(connect_redis(target), RedisCluster)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://cache:6379", "must start with one of"),
        ("redis-cluster://cache:6379", "must start with one of"),
        ("redis://cache:6379/zero", "database must be a number"),
        ("redis://cache:port", "Port"),
        ("unix://", "names no socket"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/mymaster/one", "database must be a number"),
        ("redis+sentinel://s1:http/mymaster", "port"),
        ("redis+cluster://n1:7000/2", "only database 0"),
        ("redis+cluster://n1:7000,:7001", "empty host"),
        ("redis+cluster://n1:99999", "port"),
    ],
)
def test_refuses_a_url_the_service_cannot_use_and_says_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_redis_url(url)


def test_the_settings_refuse_it_at_start_without_repeating_a_password() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, redis_url="redis+sentinal://:hunter2@s1/mymaster")  # type: ignore[call-arg]
    [error] = caught.value.errors()
    assert error["loc"] == ("redis_url",)
    assert "must start with one of" in error["msg"]
    assert "hunter2" not in error["msg"]  # the message the CLI prints


def test_an_empty_url_means_the_in_process_store() -> None:
    assert Settings(_env_file=None, redis_url="").redis_url is None  # type: ignore[call-arg]

"""``CLOUDMFA_REDIS_URL``: which Redis, and a redis-py client for it (API.md "Running it").

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS, verified against the
  system's CAs) and ``unix:///path/to/socket[?db=N]``: one server, read by redis-py itself.
- ``redis+sentinel://[user:password@]host:port[,host:port…]/service-name[/db]``: the master of
  ``service-name`` as the Sentinels name it, followed through a failover. The credentials are
  the master's, as redis-py's ``Sentinel`` applies them (the Sentinels are asked without).
- ``redis+cluster://[user:password@]host:port[,host:port…]`` or ``rediss+cluster://…``: a Redis
  Cluster; the nodes are seeds, the client learns the rest from them.

Parsing is separate from connecting so that the settings can refuse a URL at start-up, before
anything is built, with one line that says what is wrong.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from redis.asyncio import ConnectionPool, Redis, RedisCluster, Sentinel
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from cloudmfa import metrics

RedisClient = Redis | RedisCluster

SENTINEL_PORT = 26379
REDIS_PORT = 6379
TIMEOUT_S = 5.0
# Connections per process to one server: one per command in flight, opened on demand and kept.
# A worker rarely has more than a few dozen commands in flight; past the cap a command fails at
# once (503 `unavailable`) rather than queue, which keeps workers × replicas under Redis's
# maxclients. redis-py's BlockingConnectionPool would queue instead, but costs about 25 µs more
# CPU per command (bench/store_calls.py), on every request.
MAX_CONNECTIONS = 256

_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")

Kind = Literal["server", "sentinel", "cluster"]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()  # Sentinels or cluster seeds
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """The target a URL names; ValueError saying what is wrong with one the service cannot use."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(
            # Not the URL itself: it may hold a password.
            f"must start with one of {', '.join(s + '://' for s in _SCHEMES)}, not {scheme!r}"
        )
    if scheme in ("redis", "rediss", "unix"):
        return _server(url)
    userinfo, _, hosts_and_path = rest.rpartition("@")
    username, password = _credentials(userinfo)
    hosts, _, path = hosts_and_path.partition("/")
    query = path.partition("?")[2] or hosts.partition("?")[2]
    if query:
        raise ValueError("takes no ?options in its Sentinel or Cluster form")
    if scheme == "redis+sentinel":
        service, _, db_text = path.partition("/")
        if not service:
            raise ValueError("names no service: redis+sentinel://host:port/service-name[/db]")
        return RedisTarget(
            kind="sentinel",
            url=url,
            nodes=_nodes(hosts, SENTINEL_PORT),
            service_name=unquote(service),
            db=_db(db_text.rstrip("/") or "0"),
            username=username,
            password=password,
        )
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0: give no /path")
    return RedisTarget(
        kind="cluster",
        url=url,
        nodes=_nodes(hosts, REDIS_PORT),
        username=username,
        password=password,
        tls=scheme == "rediss+cluster",
    )


def connect_redis(target: RedisTarget, *, decode_responses: bool = True) -> RedisClient:
    """A redis-py asyncio client for the target. Nothing is sent until its first command.
    Replies come as str, or as bytes with ``decode_responses=False`` (what saq expects)."""
    options = _connection_options(decode_responses)
    if target.kind == "server":
        pool = CountedConnectionPool.from_url(
            target.url, max_connections=MAX_CONNECTIONS, **options
        )
        return Redis(connection_pool=pool)
    if target.kind == "sentinel":
        assert target.service_name is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            sentinel_kwargs={
                "socket_timeout": TIMEOUT_S,
                "socket_connect_timeout": TIMEOUT_S,
                # No retry on a Sentinel that does not answer (redis-py's default retries with
                # backoff, seconds per request): the next Sentinel in the list is asked instead.
                "retry": Retry(NoBackoff(), 0),
            },
            **options,
        )
        client: Redis = sentinel.master_for(
            target.service_name,
            connection_pool_class=CountedSentinelConnectionPool,
            db=target.db,
            max_connections=MAX_CONNECTIONS,
            username=target.username,
            password=target.password,
        )
        return client
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        max_connections=MAX_CONNECTIONS,  # per node
        # A MOVED reply patches that slot's owner only. redis-py's default re-reads the whole
        # topology at every fifth MOVED through its own aclose(), which closes the connections
        # other requests are using at that moment, answering them 503 in the middle of a
        # failover for nothing (store/ephemeral.py, closed_under_the_command). A node that
        # stops answering still makes the client re-read the topology, without a reset.
        reinitialize_steps=0,
        **options,
    )


class _CountsUse:
    """Counts the connections checked out of a redis-py pool (for the metrics), through the
    pool's public get_connection and release. Only connections handed out are counted back
    in: a failing get_connection releases its connection itself before anyone had it."""

    _handed_out: weakref.WeakSet[Any]

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[misc]
        if not hasattr(self, "_handed_out"):
            self._handed_out = weakref.WeakSet()
        self._handed_out.add(connection)
        metrics.REDIS_POOL_IN_USE.inc()
        return connection

    async def release(self, connection: Any) -> None:
        handed_out = getattr(self, "_handed_out", None)
        if handed_out is not None and connection in handed_out:
            handed_out.discard(connection)
            metrics.REDIS_POOL_IN_USE.dec()
        await super().release(connection)  # type: ignore[misc]


class CountedConnectionPool(_CountsUse, ConnectionPool):
    pass


class CountedSentinelConnectionPool(_CountsUse, SentinelConnectionPool):
    pass


def _connection_options(decode_responses: bool) -> dict[str, Any]:
    return {
        "decode_responses": decode_responses,
        "socket_timeout": TIMEOUT_S,
        "socket_connect_timeout": TIMEOUT_S,
        # One immediate retry on a broken connection (a pooled one Redis dropped, a failover);
        # not on a timeout, where the command may have run and waiting again doubles the wait.
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }


def _server(url: str) -> RedisTarget:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("names no socket: unix:///path/to/socket[?db=N]")
    elif parts.path.strip("/"):
        _db(parts.path.strip("/"))  # redis-py would quietly use database 0 instead
    try:
        options = parse_url(url)  # what redis-py itself will connect with
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return RedisTarget(
        kind="server", url=url, db=int(options.get("db", 0)), tls=parts.scheme == "rediss"
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")  # as urllib (and so redis-py) reads them
    return (unquote(user) or None), (unquote(password) if sep else None)


def _nodes(hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    nodes = []
    for node in hosts.split(","):
        host, port = _host_port(node.strip(), default_port)
        nodes.append((host, port))
    return tuple(nodes)


def _host_port(node: str, default_port: int) -> tuple[str, int]:
    if node.startswith("["):  # [IPv6]:port
        host, _, after = node[1:].partition("]")
        port_text = after.removeprefix(":")
    elif node.count(":") == 1:
        host, _, port_text = node.partition(":")
    else:
        host, port_text = node, ""
    if not host:
        raise ValueError(f"names an empty host in {node!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"has a port that is not a number from 1 to 65535 in {node!r}")
    return host, int(port_text)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database must be a number, not {text!r}")
    return int(text)

"""A lean asyncio Redis client for the ephemeral store.

Why not redis-py here: on the development machine its asyncio client spends about 170 µs of
CPU per command (connection pool, retry and timeout layers), this one about 35 µs
(`bench/README.md`). The TOTP verify step makes three or four store calls, so that difference
was a large share of a worker's time. redis-py stays the client of the `limits` library.

What it does, and no more: one connection per process; commands are pipelined on it and each
reply goes to the oldest waiting caller, which is correct because Redis answers in the order it
receives. Commands sent in the same turn of the event loop (by concurrent requests) leave in one
write, at the end of that turn: on loopback a write is a system call that costs about as much
CPU as the command itself. Replies are parsed by hiredis (the C parser redis-py itself uses),
commands packed by it too. A command that fails on a broken connection raises
``RedisConnectionError``; the next one reconnects. A command not answered within the timeout
drops the connection, failing every command waiting on it, rather than leave a stuck connection
in place; one timer per connection watches the oldest command, not one per command.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from hashlib import sha1
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class RedisError(Exception):
    """Redis answered with an error (a script error, a wrong type, a refused AUTH…)."""


class RedisConnectionError(ConnectionError):
    """Redis could not be reached or the connection broke; the API answers 503."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, verified
        against the system's CAs) or ``unix:///path/to/socket[?db=N]``."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {url!r}")
        query = parse_qs(parts.query)
        path = parts.path.lstrip("/")
        if parts.scheme == "unix":
            db_text = query.get("db", ["0"])[0]
        else:
            db_text = path or query.get("db", ["0"])[0]
        try:
            db = int(db_text)
        except ValueError:
            raise ValueError(f"the Redis database must be a number, not {db_text!r}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            unix_path=parts.path if parts.scheme == "unix" else None,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
        )


class Script:
    """A Lua script, run by its SHA-1 (loaded on first use, and again after a server restart)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = sha1(source.encode(), usedforsecurity=False).hexdigest()


class _Connection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # and when it was sent
        self.broken: Exception | None = None
        self._reader = hiredis.Reader(encoding="utf-8")
        self._outgoing: list[bytes] = []
        self._timeout_s = timeout_s
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if reply is False:
                return
            waiter, _ = self.waiting.popleft()
            if not waiter.done():  # a caller that gave up (cancelled) still had its reply
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("Redis closed the connection"))

    def send(self, packed: bytes, waiter: asyncio.Future[Any]) -> None:
        if self.broken is not None or self.transport is None:
            raise RedisConnectionError("the connection to Redis is closed")
        now = self._loop.time()
        self.waiting.append((waiter, now))
        self._outgoing.append(packed)
        if len(self._outgoing) == 1:
            self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(now + self._timeout_s, self._check_oldest)

    def _flush(self) -> None:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self.broken is not None or self.transport is None or not data:
            return
        try:
            self.transport.write(data)
        except Exception as exc:
            # Run by the event loop, not by a caller: fail the waiting commands now rather
            # than leave them to the timeout.
            self.abort(RedisConnectionError(f"could not write to Redis: {exc}"))

    def _check_oldest(self) -> None:
        self._watchdog = None
        if not self.waiting:
            return
        deadline = self.waiting[0][1] + self._timeout_s
        if self._loop.time() >= deadline:
            self.abort(RedisConnectionError(f"Redis did not answer within {self._timeout_s:g} s"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_oldest)

    def abort(self, reason: Exception) -> None:
        self._fail(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, reason: Exception) -> None:
        if self.broken is None:
            self.broken = reason
        self._outgoing.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            waiter, _ = self.waiting.popleft()
            if not waiter.done():
                if isinstance(reason, RedisConnectionError):
                    waiter.set_exception(RedisConnectionError(str(reason)))
                else:
                    lost = RedisConnectionError(f"lost the connection to Redis: {reason}")
                    waiter.set_exception(lost)


class RedisClient:
    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.address = RedisAddress.from_url(url)
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    async def execute(self, *args: str | int | bytes) -> Any:
        """Send one command and return its reply (str, int, list or None)."""
        connection = self._connection
        if connection is None or connection.broken is not None:
            connection = await self._connect()
        return await self._roundtrip(connection, args)

    async def run_script(self, script: Script, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # EVAL runs it and leaves it cached, so the next EVALSHA finds it.
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        self._connection = None

    async def _roundtrip(self, connection: _Connection, args: tuple[str | int | bytes, ...]) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # hiredis's stub types the argument as a 1-tuple; any tuple of arguments is accepted.
        connection.send(hiredis.pack_command(cast(Any, args)), waiter)
        reply = await waiter
        if isinstance(reply, hiredis.ReplyError):
            raise RedisError(str(reply))
        return reply

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is not None and self._connection.broken is None:
                return self._connection  # another caller connected while this one waited
            loop = asyncio.get_running_loop()
            address = self.address

            def protocol() -> _Connection:
                return _Connection(self._timeout_s)

            try:
                async with asyncio.timeout(self._timeout_s):
                    if address.unix_path:
                        _, connection = await loop.create_unix_connection(
                            protocol, address.unix_path
                        )
                    else:
                        _, connection = await loop.create_connection(
                            protocol,
                            address.host,
                            address.port,
                            ssl=ssl.create_default_context() if address.tls else None,
                        )
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(
                    f"cannot connect to Redis at {self._where()}: {exc}"
                ) from None
            try:
                await self._handshake(connection)
            except BaseException:
                connection.abort(RedisConnectionError("handshake failed"))
                raise
            self._connection = connection
            return connection

    async def _handshake(self, connection: _Connection) -> None:
        address = self.address
        if address.password is not None:
            credentials = (
                [address.username, address.password] if address.username else [address.password]
            )
            await self._roundtrip(connection, ("AUTH", *credentials))
        if address.db:
            await self._roundtrip(connection, ("SELECT", address.db))

    def _where(self) -> str:
        if self.address.unix_path:
            return self.address.unix_path
        return f"{self.address.host}:{self.address.port}"

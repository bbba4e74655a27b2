"""A lean HTTP/1.1 load generator on uvloop: N keep-alive connections, either each sending its
next request as soon as the previous answer is read (closed loop, ``run_scenario``), or together
keeping to a timetable of a fixed rate (open loop, ``run_paced``).

It shares the machine's two cores with the server under test, so it stays small: raw asyncio
streams, no HTTP library, just enough parsing to find the end of each response.

Closed loop measures saturation: the clients wait for the server, so the rate is whatever the
server manages and the latency at 32 clients is about 32 / rate. Open loop measures a load the
server is offered regardless: request i is due i / rate seconds after the start, and its latency
is counted from then, not from when it could be sent. A server that falls behind therefore
shows it in the latency (the requests waiting for a free connection wait on its account) rather
than slowing the clients down and hiding it, which is what a closed loop does ("coordinated
omission").
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CONNECT_SPACING_S = 0.02
RequestFactory = Callable[[int], tuple[str, str, bytes]]  # index → (method, path, json body)
# An open-loop run kept to its rate when its requests left at no less than this share of it.
RATE_KEPT_SHARE = 0.95


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else 0.0

    @classmethod
    def merged(cls, parts: list[LoadResult]) -> LoadResult:
        """Several runs of one measurement as one: all latencies, all statuses, all time."""
        merged = cls()
        for part in parts:
            merged.latencies_s.extend(part.latencies_s)
            for status, n in part.statuses.items():
                merged.statuses[status] = merged.statuses.get(status, 0) + n
            merged.elapsed_s += part.elapsed_s
        return merged

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_s, p)


@contextmanager
def collector_frozen() -> Iterator[None]:
    """While a run is timed, the load generator's collector walks only what the run makes.

    The bench process holds the service's modules and everything its set-up made; a full
    collector pass over that took 80-110 ms here and stopped every client at once, which the
    clients then counted as the server's latency (bench/scale.py's "stall at the sixth
    search"). So it is collected and frozen first, as `cloudmfa serve`'s workers do with what
    their startup made, and unfrozen after."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass(frozen=True)
class Schedule:
    """The timetable of an open-loop run: ``count`` requests, request i due ``i / rate`` seconds
    after the start, whatever became of the requests before it."""

    rate: float
    count: int

    @classmethod
    def of(
        cls, rate: float, *, total: int | None = None, duration_s: float | None = None
    ) -> Schedule:
        """``rate`` requests a second for ``duration_s`` (the requests due before it ends), or
        ``total`` requests; with both, whichever gives fewer."""
        if rate <= 0:
            raise ValueError("the rate must be positive")
        if total is None and duration_s is None:
            raise ValueError("give total or duration_s")
        counts = [total] if total is not None else []
        if duration_s is not None:
            counts.append(math.ceil(duration_s * rate))
        return cls(rate, max(0, min(counts)))

    def due(self, index: int) -> float:
        """Seconds after the start when request ``index`` should leave."""
        return index / self.rate


@dataclass
class PacedResult(LoadResult):
    """An open-loop run: ``latencies_s`` are counted from each request's due time."""

    schedule: Schedule = field(default_factory=lambda: Schedule(1.0, 0))
    started_at: float = 0.0  # time.monotonic() at the start of the timetable
    send_lags_s: list[float] = field(default_factory=list)  # how late each request left
    last_sent_s: float = 0.0  # when the last request left, after the start

    def due_at(self, index: int) -> float:
        """Request ``index``'s due time on time.monotonic()'s clock (the same CLOCK_MONOTONIC
        as every other process of the machine)."""
        return self.started_at + self.schedule.due(index)

    @property
    def sent_rate(self) -> float:
        """The rate the requests actually left at: ``count`` requests over the time from the
        start to the last one's leaving, plus one interval (so a run kept to the timetable
        gives exactly the offered rate)."""
        if not self.count:
            return 0.0
        return self.count / (self.last_sent_s + 1 / self.schedule.rate)

    @property
    def rate_kept(self) -> bool:
        """Every request was sent, at no less than RATE_KEPT_SHARE of the offered rate: the
        server kept up (a connection was free when each became due, or nearly so)."""
        return (
            self.count == self.schedule.count
            and self.sent_rate >= RATE_KEPT_SHARE * self.schedule.rate
        )


def _encode(method: str, path: str, body: bytes, host: str) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nUser-Agent: cloudmfa-bench\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


Send = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]
Scenario = Callable[[int, Send], Awaitable[None]]


class _Connection:
    """One keep-alive connection; every answer's status is counted into ``result``."""

    def __init__(self, host: str, port: int, result: LoadResult) -> None:
        self.host, self.port, self.result = host, port, result
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, nth: int) -> _Connection:
        # Connections are opened a little apart: a burst of simultaneous connects is all
        # accepted by whichever server worker wakes first, and stays there (keep-alive).
        await asyncio.sleep(nth * CONNECT_SPACING_S)
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def send(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(_encode(method, path, body, f"{self.host}:{self.port}"))
        status, response = await _read_response(self._reader)
        self.result.statuses[status] = self.result.statuses.get(status, 0) + 1
        return status, response

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def run_scenario(
    *,
    host: str,
    port: int,
    scenario: Scenario,
    total: int | None = None,
    duration_s: float | None = None,
    concurrency: int = 32,
) -> LoadResult:
    """Closed loop: run ``scenario(index, send)`` ``total`` times or for ``duration_s`` (with
    both, until the first runs out) over ``concurrency`` keep-alive connections; each run's wall
    time is one latency sample."""
    if total is None and duration_s is None:
        raise ValueError("give total or duration_s")
    result = LoadResult()
    counter = iter(range(total if total is not None else 10**12))
    with collector_frozen():
        started = time.perf_counter()
        deadline = started + duration_s if duration_s is not None else float("inf")

        async def client(nth: int) -> None:
            connection = await _Connection(host, port, result).open(nth)
            try:
                while time.perf_counter() < deadline:
                    index = next(counter, None)
                    if index is None:
                        return
                    began = time.perf_counter()
                    await scenario(index, connection.send)
                    result.latencies_s.append(time.perf_counter() - began)
            finally:
                connection.close()

        await asyncio.gather(*(client(nth) for nth in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
        return result


async def run_paced(
    *,
    host: str,
    port: int,
    scenario: Scenario,
    rate: float,
    total: int | None = None,
    duration_s: float | None = None,
    concurrency: int = 32,
) -> PacedResult:
    """Open loop: ``concurrency`` keep-alive connections together offer ``rate`` runs of
    ``scenario(index, send)`` a second (``Schedule.of``). Each run starts on the first free
    connection once it is due; its latency is from its due time to its end, so the time it
    waited for a connection counts. The connections are all open before the timetable starts."""
    schedule = Schedule.of(rate, total=total, duration_s=duration_s)
    result = PacedResult(schedule=schedule)
    connections = await asyncio.gather(
        *(_Connection(host, port, result).open(nth) for nth in range(concurrency))
    )
    indices = iter(range(schedule.count))
    with collector_frozen():
        started = result.started_at = time.monotonic()

        async def client(connection: _Connection) -> None:
            while (index := next(indices, None)) is not None:
                due = started + schedule.due(index)
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                sent = time.monotonic()
                result.send_lags_s.append(sent - due)
                result.last_sent_s = max(result.last_sent_s, sent - started)
                await scenario(index, connection.send)
                result.latencies_s.append(time.monotonic() - due)

        try:
            await asyncio.gather(*(client(c) for c in connections))
        finally:
            for connection in connections:
                connection.close()
        result.elapsed_s = time.monotonic() - started
        return result


async def run_load(
    *,
    host: str,
    port: int,
    make_request: RequestFactory,
    total: int | None = None,
    duration_s: float | None = None,
    concurrency: int = 32,
) -> LoadResult:
    """One request per scenario run."""

    async def one(index: int, send: Send) -> None:
        await send(*make_request(index))

    return await run_scenario(
        host=host,
        port=port,
        scenario=one,
        total=total,
        duration_s=duration_s,
        concurrency=concurrency,
    )

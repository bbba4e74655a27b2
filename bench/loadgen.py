"""A lean HTTP/1.1 load generator: N keep-alive connections, each sending its next request as
soon as the previous answer is read (closed loop), on uvloop.

It shares the machine's two cores with the server under test, so it stays small: raw asyncio
streams, no HTTP library, just enough parsing to find the end of each response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CONNECT_SPACING_S = 0.02
RequestFactory = Callable[[int], tuple[str, str, bytes]]  # index → (method, path, json body)


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
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]


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


async def run_scenario(
    *,
    host: str,
    port: int,
    scenario: Scenario,
    total: int | None = None,
    duration_s: float | None = None,
    concurrency: int = 32,
) -> LoadResult:
    """Run ``scenario(index, send)`` ``total`` times or for ``duration_s`` (with both, until
    the first runs out) over ``concurrency`` keep-alive connections; each run's wall time is
    one latency sample."""
    if total is None and duration_s is None:
        raise ValueError("give total or duration_s")
    result = LoadResult()
    counter = iter(range(total if total is not None else 10**12))
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else float("inf")

    async def worker(nth: int) -> None:
        # Connections are opened a little apart: a burst of simultaneous connects is all
        # accepted by whichever server worker wakes first, and stays there (keep-alive).
        await asyncio.sleep(nth * CONNECT_SPACING_S)
        reader, writer = await asyncio.open_connection(host, port)

        async def send(method: str, path: str, body: bytes) -> tuple[int, bytes]:
            writer.write(_encode(method, path, body, f"{host}:{port}"))
            status, response = await _read_response(reader)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            return status, response

        try:
            while time.perf_counter() < deadline:
                index = next(counter, None)
                if index is None:
                    return
                began = time.perf_counter()
                await scenario(index, send)
                result.latencies_s.append(time.perf_counter() - began)
        finally:
            writer.close()

    await asyncio.gather(*(worker(nth) for nth in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
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

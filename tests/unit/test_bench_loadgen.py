"""The load generator's open-loop mode (bench/loadgen.py): its timetable, and a latency counted
from each request's due time, so a request that waited for a free connection carries the wait.

The run below goes against a small HTTP server in this process that holds its first answer back
on purpose: the lower bounds asserted follow from that hold, whatever the machine's speed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from bench.loadgen import PacedResult, Schedule, Send, run_paced

HOLD_S = 0.2


def test_a_schedule_spaces_requests_evenly_for_its_duration() -> None:
    schedule = Schedule.of(200, duration_s=10)
    assert schedule.count == 2000
    assert [schedule.due(i) for i in (0, 1, 200, 1999)] == [0.0, 0.005, 1.0, 9.995]
    assert Schedule.of(200, duration_s=0.0125).count == 3  # due at 0, 5 and 10 ms


def test_a_schedule_stops_at_whichever_of_total_and_duration_comes_first() -> None:
    assert Schedule.of(200, total=50, duration_s=10).count == 50
    assert Schedule.of(200, total=5000, duration_s=10).count == 2000
    assert Schedule.of(7, total=3).count == 3
    with pytest.raises(ValueError, match="total or duration"):
        Schedule.of(200)
    with pytest.raises(ValueError, match="positive"):
        Schedule.of(0, total=1)


def test_the_rate_is_kept_only_when_every_request_left_on_time() -> None:
    def run(count: int, last_sent_s: float) -> PacedResult:
        result = PacedResult(schedule=Schedule.of(100, total=10), last_sent_s=last_sent_s)
        result.latencies_s = [0.001] * count
        return result

    on_time = run(10, last_sent_s=0.09)  # the tenth request left when it was due
    assert on_time.sent_rate == pytest.approx(100) and on_time.rate_kept
    late = run(10, last_sent_s=0.5)  # the server held the connections: the last left 0.41 s late
    assert late.sent_rate == pytest.approx(10 / 0.51) and not late.rate_kept
    assert not run(9, last_sent_s=0.08).rate_kept  # one request never went out


class HoldingServer:
    """HTTP/1.1 on 127.0.0.1: answers 200 at once, except the first request, held HOLD_S."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                if self.requests == 1:
                    await asyncio.sleep(HOLD_S)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except asyncio.IncompleteReadError:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest_asyncio.fixture
async def server() -> AsyncIterator[HoldingServer]:
    holding = HoldingServer()
    holding.server = await asyncio.start_server(holding.handle, "127.0.0.1", 0)
    async with holding.server:
        yield holding


async def test_a_request_that_waits_for_a_connection_counts_the_wait(
    server: HoldingServer,
) -> None:
    sent: list[int] = []

    async def post(index: int, send: Send) -> None:
        sent.append(index)
        status, _ = await send("POST", "/", b"{}")
        assert status == 200

    # One connection, three requests due 10 ms apart; the first answer takes HOLD_S, so the
    # second and third can only leave after it, late by nearly HOLD_S.
    result = await run_paced(
        host="127.0.0.1", port=server.port, scenario=post, rate=100, total=3, concurrency=1
    )
    assert sent == [0, 1, 2] and result.statuses == {200: 3} and server.requests == 3
    first, *waited = sorted(result.send_lags_s)
    assert len(waited) == 2 and all(lag >= HOLD_S - 0.02 for lag in waited)
    # Each latency is from the due time: the held one, and the two that waited behind it.
    assert len(result.latencies_s) == 3
    assert all(latency >= HOLD_S - 0.02 for latency in result.latencies_s)
    assert result.last_sent_s >= HOLD_S and not result.rate_kept
    assert result.due_at(2) - result.due_at(0) == pytest.approx(0.02)

"""A worker hands argon2id's working buffer back once its hashes stop, not after each one: a
busy worker reuses the buffer (no page faulted in again per hash), an idle one does not hold it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from cloudmfa.cli import serve
from cloudmfa.security import passwords
from cloudmfa.security.passwords import PasswordHashing, glibc_malloc_trim

PASSWORD = "plum-orbit-velvet-canyon-42"


class Trims:
    """Stands in for malloc_trim: counts the calls and lets a test wait for one."""

    def __init__(self) -> None:
        self.count = 0
        self.called = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.called.set()


async def _pool_drained(hashing: PasswordHashing) -> None:
    # The hashing pool runs its jobs in order: once a no-op queued now has run, so has every
    # trim handed to the pool before it.
    await asyncio.wrap_future(hashing._pool.submit(lambda: None))


async def test_a_burst_of_hashes_is_followed_by_one_trim_once_idle() -> None:
    trims = Trims()
    hashing = PasswordHashing(
        time_cost=1, memory_kib=8192, parallelism=1, threads=1, idle_trim_s=0, trim=trims
    )
    stored = await hashing.hash(PASSWORD)
    assert await asyncio.to_thread(trims.called.wait, 10)
    trims.count = 0
    results = await asyncio.gather(*(hashing.verify(stored, PASSWORD) for _ in range(8)))
    assert all(r.ok for r in results)
    await asyncio.sleep(0)  # the idle callback, due at once
    await _pool_drained(hashing)
    assert trims.count == 1  # after the last of the eight, not after each


async def test_no_trim_before_the_idle_time_has_passed() -> None:
    trims = Trims()
    hashing = PasswordHashing(
        time_cost=1, memory_kib=8192, parallelism=1, threads=1, idle_trim_s=3600, trim=trims
    )
    stored = await hashing.hash(PASSWORD)
    assert (await hashing.verify(stored, PASSWORD)).ok
    await asyncio.sleep(0)
    await _pool_drained(hashing)
    assert trims.count == 0


async def test_a_hash_in_the_idle_time_makes_the_pending_trim_moot() -> None:
    trims = Trims()
    hashing = PasswordHashing(
        time_cost=1, memory_kib=8192, parallelism=1, threads=1, idle_trim_s=3600, trim=trims
    )
    stored = await hashing.hash(PASSWORD)
    moot = hashing._busy_periods  # the idle spell that hash's trim was scheduled for
    assert (await hashing.verify(stored, PASSWORD)).ok  # a new busy period began
    hashing._trim_if_still_idle(moot)
    await _pool_drained(hashing)
    assert trims.count == 0
    hashing._trim_if_still_idle(hashing._busy_periods)  # the current idle spell's own trim
    await _pool_drained(hashing)
    assert trims.count == 1


@pytest.mark.skipif(glibc_malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_the_buffer_leaves_the_resident_memory_once_idle() -> None:
    """With the service's own parameters (19 MiB), in a fresh process set up as serve sets up
    its workers: resident while hashing (the freed buffer kept for the next hash), handed back
    by the idle trim."""
    child = textwrap.dedent(
        """
        import asyncio, json
        from cloudmfa.config import Settings
        from cloudmfa.security.passwords import PasswordHashing

        def rss_mib():
            with open("/proc/self/status") as status:
                line = next(l for l in status if l.startswith("VmRSS"))
            return int(line.split()[1]) / 1024

        async def main():
            s = Settings(_env_file=None)
            h = PasswordHashing(time_cost=s.argon2_time_cost, memory_kib=s.argon2_memory_kib,
                                parallelism=s.argon2_parallelism, threads=1, idle_trim_s=3600)
            stored = await h.hash("plum-orbit-velvet-canyon-42")
            for _ in range(3):
                await h.verify(stored, "plum-orbit-velvet-canyon-42")
            busy = rss_mib()
            h._trim_if_still_idle(h._busy_periods)  # what the idle timer calls
            await asyncio.wrap_future(h._pool.submit(lambda: None))
            print(json.dumps({"busy": busy, "idle": rss_mib(), "kib": s.argon2_memory_kib}))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "GLIBC_TUNABLES": serve.ONE_MALLOC_ARENA}
    done = subprocess.run(
        [sys.executable, "-c", child],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    figures = json.loads(done.stdout)
    buffer_mib = figures["kib"] / 1024
    assert figures["busy"] - figures["idle"] >= 0.8 * buffer_mib, figures


def test_serve_keeps_its_workers_to_one_malloc_arena(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(passwords, "one_malloc_arena", lambda: calls.append(True) or True)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    serve._one_malloc_arena()
    assert calls == [True]  # this process
    assert os.environ["GLIBC_TUNABLES"] == serve.ONE_MALLOC_ARENA  # the workers it starts


def test_an_operators_own_allocator_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(passwords, "one_malloc_arena", lambda: calls.append(True) or True)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    serve._one_malloc_arena()
    assert calls == []
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4"


def test_no_tunable_where_the_c_library_is_not_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "one_malloc_arena", lambda: False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    serve._one_malloc_arena()
    assert "GLIBC_TUNABLES" not in os.environ

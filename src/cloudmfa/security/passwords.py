"""Password hashing: argon2id for everything new, bcrypt accepted for imported accounts.

Hashing is CPU-bound (tens of milliseconds by design), so every call runs in a worker thread;
argon2-cffi and bcrypt release the GIL while they work.

Each argon2id hash takes its working buffer (19 MiB by default) from the C allocator, and glibc
keeps the freed block in the hashing thread's arena: reused by the next hash, which is what a
busy worker wants (no page is faulted in again), but 19 MiB a worker holds for nothing once the
sign-ins stop. So when no hash has run for ``idle_trim_s``, the hashing thread hands free memory
back to the kernel (glibc's ``malloc_trim``). ``malloc_trim`` gives back the free top of glibc's
main arena, not of the per-thread arenas a hashing thread would otherwise allocate from, so
``serve`` keeps its processes to one arena (``one_malloc_arena``). Handing the buffer back after
every hash instead (a fixed mmap threshold, each buffer a fresh mapping) cost 2-5 ms of page
faults per hash, a tenth of the hash itself (bench/README.md, "Worker memory").
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import secrets
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import bcrypt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cloudmfa import metrics

T = TypeVar("T")
IDLE_TRIM_S = 0.25  # idle this long after a hash, the hashing thread returns its buffer
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_BCRYPT_MAX_BYTES = 72  # bcrypt only ever looked at this much of a password


def normalise(password: str) -> str:
    """NFKC, as NIST SP 800-63B-4 §3.1.1.2 asks, before counting, checking or hashing."""
    return unicodedata.normalize("NFKC", password)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be upgraded


@functools.cache
def glibc_malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``: free memory of every arena back to the kernel. None where the
    C library has no such function (musl, macOS), whose allocators keep their own counsel."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own C library
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


M_ARENA_MAX = -8  # mallopt's parameter for the number of arenas (glibc's malloc.h)


def one_malloc_arena() -> bool:
    """Have every thread of this process allocate from glibc's main arena, whose free memory
    ``malloc_trim`` hands back (the same as ``GLIBC_TUNABLES=glibc.malloc.arena_max=1``, for a
    process that is already running). Threads that exist already keep their arenas, so call it
    before any are started. False where the C library is not glibc."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or glibc_malloc_trim() is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))


class PasswordHashing:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        threads: int | None = None,
        idle_trim_s: float = IDLE_TRIM_S,
        trim: Callable[[], None] | None = None,
    ) -> None:
        # Hashes run on a pool of their own, sized to the cores: argon2 is memory-hard, and
        # more hashes in flight than cores only makes them evict each other from the caches
        # (and leaves the default pool, which the event loop's other work uses, starved).
        self.threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="argon2")
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so that path costs one real verification.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))
        self._idle_trim_s = idle_trim_s
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._in_flight = 0  # hashes queued or running; touched on the event loop only
        self._busy_periods = 0  # which idle spell a scheduled trim belongs to

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(normalise(password))

    async def hash(self, password: str) -> str:
        return await self._run(self.hash_sync, password)

    def verify_sync(self, stored_hash: str, password: str) -> VerifyResult:
        raw = password
        password = normalise(password)
        if stored_hash.startswith(_BCRYPT_PREFIXES):
            return self._verify_bcrypt(stored_hash, password, raw)
        try:
            self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
            # UnicodeEncodeError: argon2-cffi encodes the stored hash as ASCII, so a corrupt
            # hash with any other character is malformed input, not a reason to fail the request.
            return VerifyResult(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return VerifyResult(ok=True, new_hash=self._hasher.hash(password))
        return VerifyResult(ok=True)

    def _verify_bcrypt(self, stored_hash: str, password: str, raw: str) -> VerifyResult:
        # Imported bcrypt hashes were made by a system that did not normalise, so the password
        # exactly as typed is tried too when NFKC changes it; the upgrade hash is of the NFKC form.
        try:
            expected = stored_hash.encode("ascii")
            ok = any(
                bcrypt.checkpw(candidate.encode("utf-8")[:_BCRYPT_MAX_BYTES], expected)
                for candidate in dict.fromkeys((password, raw))
            )
        except ValueError:  # a malformed stored hash (UnicodeEncodeError is a ValueError)
            return VerifyResult(ok=False)
        if not ok:
            return VerifyResult(ok=False)
        return VerifyResult(ok=True, new_hash=self._hasher.hash(password))

    async def verify(self, stored_hash: str, password: str) -> VerifyResult:
        return await self._run(self.verify_sync, stored_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for an account that does not exist."""
        await self._run(self.verify_sync, self._dummy_hash, password)

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        metrics.PASSWORD_HASH_QUEUE.inc()
        if self._in_flight == 0:
            self._busy_periods += 1  # a trim scheduled in the last idle spell is now moot
        self._in_flight += 1
        future = self._pool.submit(_counted, fn, *args)
        try:
            return await asyncio.wrap_future(future)
        finally:
            if future.cancelled():  # cancelled while queued: it leaves without ever starting
                metrics.PASSWORD_HASH_QUEUE.dec()
            self._in_flight -= 1
            if self._in_flight == 0 and self._trim is not None:
                asyncio.get_running_loop().call_later(
                    self._idle_trim_s, self._trim_if_still_idle, self._busy_periods
                )

    def _trim_if_still_idle(self, busy_period: int) -> None:
        if self._in_flight == 0 and busy_period == self._busy_periods and self._trim is not None:
            # On the hashing thread: the call walks the arenas, which the event loop need not wait
            # for, and a hash that arrives meanwhile simply queues behind it.
            self._pool.submit(self._trim)


def _counted(fn: Callable[..., T], *args: str) -> T:
    """Runs on a pool thread: the hash leaves the queue as it starts."""
    metrics.PASSWORD_HASH_QUEUE.dec()
    metrics.PASSWORD_HASHES_RUNNING.inc()
    try:
        return fn(*args)
    finally:
        metrics.PASSWORD_HASHES_RUNNING.dec()

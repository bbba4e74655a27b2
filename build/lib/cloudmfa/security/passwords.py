"""Password hashing: argon2id for everything new, bcrypt accepted for imported accounts.

Hashing is CPU-bound (tens of milliseconds by design), so every call runs in a worker thread;
argon2-cffi and bcrypt release the GIL while they work.
"""

from __future__ import annotations

import asyncio
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

T = TypeVar("T")
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_BCRYPT_MAX_BYTES = 72  # bcrypt only ever looked at this much of a password


def normalise(password: str) -> str:
    """NFKC, as NIST SP 800-63B-4 §3.1.1.2 asks, before counting, checking or hashing."""
    return unicodedata.normalize("NFKC", password)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be upgraded


class PasswordHashing:
    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, threads: int | None = None
    ) -> None:
        # Hashes run on a pool of their own, sized to the cores: argon2 is memory-hard, and
        # more hashes in flight than cores only makes them evict each other from the caches
        # (and leaves the default pool, which the event loop's other work uses, starved).
        self._pool = ThreadPoolExecutor(
            max_workers=threads or os.cpu_count() or 1, thread_name_prefix="argon2"
        )
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so that path costs one real verification.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))

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
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

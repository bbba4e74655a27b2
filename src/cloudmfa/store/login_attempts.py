"""Login attempts: the state behind an mfa_token, in the ephemeral store (API.md "Login").

An attempt lives ``ttl_s`` seconds and is spent by the one verification that completes it. It
keeps the factors offered at the password step, snapshots of those that verify from one
(secrets still encrypted), what each factor's last challenge asked to keep, and counts its
tries and sends. Tries are counted, and a lease taken, before a proof is checked: parallel
guesses never exceed the limit, and of two valid proofs sent at once only one is used up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudmfa.errors import MfaTokenExpired, RateLimited
from cloudmfa.factors.base import LoginAttempt, StoredFactor
from cloudmfa.security.throttle import ACCOUNT_TAG_LENGTH, AccountThrottle, account_tag
from cloudmfa.security.tokens import hash_opaque_token, new_opaque_token
from cloudmfa.store.ephemeral import EphemeralStore

# How long one verification may hold its attempt. It is given back as soon as the request
# ends; this only bounds the wait after a worker died mid-request.
VERIFICATION_LEASE_S = 10


# An attempt's id is "<account tag>:<hash of the mfa_token>", and every key of an attempt carries
# the account's tag in braces, as the account's failure count does (security/throttle.py): on a
# Redis Cluster they share a hash slot, so the one script that reads the attempt, takes its
# lease, counts its try and reserves one of the account's attempts may touch all of them.
def _tagged(attempt_id: str) -> str:
    tag, _, token_hash = attempt_id.partition(":")
    return f"{{{tag}}}:{token_hash}"


def _token_key(attempt_id: str) -> str:
    return f"mfa:{_tagged(attempt_id)}"


def _tries_key(attempt_id: str) -> str:
    return f"mfa_tries:{_tagged(attempt_id)}"


def _lease_key(attempt_id: str) -> str:
    return f"mfa_busy:{_tagged(attempt_id)}"


def _sends_key(attempt_id: str) -> str:
    return f"mfa_sends:{_tagged(attempt_id)}"


def _kept_key(attempt_id: str, factor_id: str) -> str:
    return f"mfa_kept:{_tagged(attempt_id)}:{factor_id}"


def _attempt_id(mfa_token: str) -> str:
    """An mfa_token is "<account tag>.<random>": the id is the tag and the token's hash, so a
    token with another account's tag names no attempt. Anything else names none either."""
    tag, dot, _ = mfa_token.partition(".")
    if not dot or len(tag) != ACCOUNT_TAG_LENGTH or not all(c in "0123456789abcdef" for c in tag):
        raise expired()
    return f"{tag}:{hash_opaque_token(mfa_token)}"


def expired() -> MfaTokenExpired:
    return MfaTokenExpired("This sign-in attempt has expired; start again with the password.")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: str  # the account's tag and the mfa_token's hash: the token itself is never stored
    user_id: str
    email: str
    offered: dict[str, str]  # factor id → type
    snapshots: dict[str, dict[str, Any]]  # factor id → StoredFactor.snapshot()

    def snapshot_of(self, factor_id: str) -> StoredFactor | None:
        snapshot = self.snapshots.get(factor_id)
        return StoredFactor.from_snapshot(snapshot) if snapshot is not None else None

    def as_seen_by_factor(self, *, kept: Mapping[str, Any] | None = None) -> LoginAttempt:
        return LoginAttempt(self.id, self.user_id, self.email, self.offered, kept)


@dataclass(frozen=True, slots=True)
class HeldAttempt:
    record: AttemptRecord
    tries: int  # which try at the attempt this is
    refused: RateLimited | None  # the account is at its limit: no attempt of it was reserved


def _record(attempt_id: str, raw: str) -> AttemptRecord:
    state = json.loads(raw)
    return AttemptRecord(
        attempt_id,
        state["uid"],
        state["email"],
        dict(state["factors"]),
        dict(state["snapshots"]),
    )


class LoginAttempts:
    def __init__(self, store: EphemeralStore, throttle: AccountThrottle, *, ttl_s: int) -> None:
        self._store = store
        self._throttle = throttle
        self.ttl_s = ttl_s

    async def open(
        self,
        *,
        user_id: str,
        email: str,
        offered: Mapping[str, str],
        snapshots: list[StoredFactor],
    ) -> str:
        """A new attempt, for a password just found right; returns its mfa_token."""
        secret, _ = new_opaque_token()
        token = f"{account_tag(email)}.{secret}"
        attempt_id = _attempt_id(token)
        state = {
            "uid": user_id,
            "email": email,
            "factors": dict(offered),
            "snapshots": {f.id: f.snapshot() for f in snapshots},
        }
        # The password step's reserved attempt of the account is given back in the same step:
        # a correct password is not a failure (but clears none: only a completed sign-in does).
        await self._store.set_and_release(
            _token_key(attempt_id),
            json.dumps(state),
            self.ttl_s,
            counter=self._throttle.key_for(email),
        )
        return token

    async def load(self, mfa_token: str) -> AttemptRecord:
        attempt_id = _attempt_id(mfa_token)
        raw = await self._store.get(_token_key(attempt_id))
        if raw is None:
            raise expired()
        return _record(attempt_id, raw)

    async def begin_verification(self, mfa_token: str, *, max_tries: int) -> HeldAttempt:
        """The attempt, held for this request alone (until ``complete`` or ``release``), and
        which try at it this is; and, in the same step, one of the account's attempts reserved
        (security/throttle.py), unless this try is past ``max_tries``."""
        attempt_id = _attempt_id(mfa_token)
        use = await self._store.begin_use(
            _token_key(attempt_id),
            counter=_tries_key(attempt_id),
            lease=_lease_key(attempt_id),
            ttl_s=self.ttl_s,
            lease_s=VERIFICATION_LEASE_S,
            max_uses=max_tries,
            reserve=self._throttle.reservation(attempt_id.partition(":")[0]),
        )
        if use.value is None:
            raise expired()
        if use.uses == 0:
            raise MfaTokenExpired("This sign-in attempt is being completed by another request.")
        refused = None
        if use.uses <= max_tries and not use.reserved:
            refused = self._throttle.refused(use.retry_after)
        return HeldAttempt(_record(attempt_id, use.value), use.uses, refused)

    async def count_send(
        self,
        attempt_id: str,
        factor_id: str,
        kept: Mapping[str, Any] | None,
        *,
        max_sends: int,
    ) -> bool:
        """One more message for this attempt, and in the same step what the factor's challenge
        asked to keep (``kept``); False, and nothing kept, when that is more than
        ``max_sends``: the code the user already has stays the one that counts."""
        sends = _sends_key(attempt_id)
        if kept is None:
            return await self._store.incr(sends, self.ttl_s) <= max_sends
        count = await self._store.count_then_set(
            sends,
            limit=max_sends,
            key=_kept_key(attempt_id, factor_id),
            value=json.dumps(kept),
            ttl_s=self.ttl_s,
        )
        return count <= max_sends

    async def keep(self, attempt_id: str, factor_id: str, kept: Mapping[str, Any]) -> None:
        """What a factor's challenge asked to keep; a new challenge replaces the old one."""
        await self._store.set(_kept_key(attempt_id, factor_id), json.dumps(kept), self.ttl_s)

    async def kept(self, attempt_id: str, factor_id: str) -> Mapping[str, Any] | None:
        raw = await self._store.get(_kept_key(attempt_id, factor_id))
        return json.loads(raw) if raw is not None else None

    async def complete(self, record: AttemptRecord, *also_delete: str) -> bool:
        """Spend the attempt, give back the lease and delete ``also_delete`` in one step;
        False when another verification spent it first (this one outlived its lease)."""
        others = [_lease_key(record.id), *(_kept_key(record.id, f) for f in record.offered)]
        spent = await self._store.pop_and_delete(_token_key(record.id), *others, *also_delete)
        return spent is not None

    async def release(self, record: AttemptRecord) -> None:
        """Give back the lease of a verification that did not complete the attempt."""
        await self._store.delete(_lease_key(record.id))

    async def end(self, record: AttemptRecord) -> None:
        """Kill the attempt (too many wrong proofs)."""
        await self._store.delete(_token_key(record.id))

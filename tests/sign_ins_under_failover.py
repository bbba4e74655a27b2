"""Sign-ins in rounds while Redis fails over underneath, and what must hold through it.

What lives in Redis: each mfa_token's login attempt (its tries, sends and lease), the
per-account and per-IP throttles, session revocations. Redis replicates asynchronously, so a
failover may lose the last writes the old master took: an attempt (its mfa_token then answers
401 `mfa_token_expired`; the user starts again with the password), a few throttle counts, a
revocation made in the last moment before the master died. What is single use is decided in
the database instead (the TOTP time step, each recovery code, each refresh token), so nothing
a failover loses lets a proof be spent twice. These rounds check exactly that: every round
spends each user's proof twice at once, and each refresh token twice at once, before, during
and after the failover, and at most one of each pair may win. During the switch the service
answers 503 `unavailable`, never 500, and it signs people in again once the new master is up.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from conftest import PG_DSN, Api
from support import MfaUser

# What one request may answer while Redis fails over (anything else fails the test).
ALLOWED = {
    "200",
    "401 mfa_token_expired",  # the attempt was lost with the old master, or spent by its twin
    "401 invalid_code",  # the twin spent the same proof first
    "401 invalid_token",  # the twin spent the same refresh token first
    "503 unavailable",  # no master for the moment
}
ROUND_PAUSE_S = 0.2  # between rounds, so a failover of a few seconds spans a few rounds
MAX_ROUNDS = 60
CALM_ROUNDS_AFTER = 2  # rounds in which everyone signs in, once the new master is up


@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    rounds_during_failover: int = 0
    proofs_offered: Counter[str] = field(default_factory=Counter)  # user id → rounds
    wins: Counter[str] = field(default_factory=Counter)  # user id → sessions signed in
    refresh_wins: int = 0

    def note(self, r: httpx.Response) -> str:
        label = "200" if r.status_code == 200 else f"{r.status_code} {r.json().get('code')}"
        self.answers[label] += 1
        return label


def answered(r: httpx.Response) -> bool:
    return r.status_code == 200


async def run_rounds(
    api: Api, users: list[MfaUser], *, fail_over: Callable[[], Any], start_at_round: int = 2
) -> Tally:
    """Rounds of sign-ins; in round ``start_at_round`` ``fail_over`` runs in a thread (it kills
    the master and waits for the new one). Ends once everyone has signed in, twice in a row,
    after the failover."""
    tally = Tally()
    refresh: dict[str, str] = {}
    recovery_left = {u.id: list(u.recovery_codes) for u in users}
    failover_done = threading.Event()
    failover: asyncio.Future[Any] | None = None
    calm = 0
    while calm < CALM_ROUNDS_AFTER:
        assert tally.rounds < MAX_ROUNDS, f"no calm after the failover: {tally.answers}"
        tally.rounds += 1
        api.clock.advance(seconds=30)  # a fresh TOTP time step for everyone
        if tally.rounds == start_at_round:
            failover = asyncio.ensure_future(asyncio.to_thread(_then_set, fail_over, failover_done))
        during = failover is not None and not failover_done.is_set()
        tally.rounds_during_failover += during
        results = await asyncio.gather(
            *(_one_round(api, u, tally, refresh, recovery_left) for u in users)
        )
        if failover_done.is_set() and not during and all(results):
            calm += 1
        if not failover_done.is_set() or not all(results):
            await asyncio.sleep(ROUND_PAUSE_S)
    assert failover is not None
    await failover  # its exceptions, if any
    assert set(tally.answers) <= ALLOWED, tally.answers
    return tally


def _then_set(action: Callable[[], Any], done: threading.Event) -> None:
    try:
        action()
    finally:
        done.set()


async def _one_round(
    api: Api,
    user: MfaUser,
    tally: Tally,
    refresh: dict[str, str],
    recovery_left: dict[str, list[str]],
) -> bool:
    """Two password steps, then the same proof sent on both mfa_tokens at once (a TOTP code,
    or every other round a recovery code); the last refresh token, twice at once. True when
    the user signed in."""
    logins = await asyncio.gather(
        *(_post(api, "/api/v1/auth/login", _password(user)) for _ in "ab")
    )
    for r in logins:
        tally.note(r)
        if answered(r):
            assert r.json()["status"] == "mfa_required", r.text
    tokens = [r.json()["mfa_token"] for r in logins if answered(r)]
    use_recovery = tally.rounds % 2 == 0 and recovery_left[user.id]
    if use_recovery:
        factor_id, code = "recovery", recovery_left[user.id].pop()
    else:
        factor_id, code = user.factor_id, user.code(api)
    old_refresh = refresh.pop(user.id, None)
    verifies = [
        _post(api, "/api/v1/auth/verify", {"mfa_token": t, "factor_id": factor_id, "code": code})
        for t in tokens
    ]
    refreshes = [
        _post(api, "/api/v1/auth/refresh", {"refresh_token": old_refresh})
        for _ in ("a", "b")
        if old_refresh is not None
    ]
    answers = await asyncio.gather(*verifies, *refreshes)
    verify_answers, refresh_answers = answers[: len(verifies)], answers[len(verifies) :]
    for r in answers:
        tally.note(r)
    if tokens:
        tally.proofs_offered[user.id] += 1
    won = [r for r in verify_answers if answered(r)]
    assert len(won) <= 1, f"one {factor_id} proof signed in {len(won)} times"
    refreshed = [r for r in refresh_answers if answered(r)]
    assert len(refreshed) <= 1, "one refresh token was spent twice"
    tally.refresh_wins += len(refreshed)
    if won:
        tally.wins[user.id] += 1
        refresh[user.id] = won[0].json()["refresh_token"]
    return bool(won)


def _password(user: MfaUser) -> dict[str, str]:
    from conftest import PASSWORD

    return {"email": user.email, "password": PASSWORD}


async def _post(api: Api, path: str, body: dict[str, Any]) -> httpx.Response:
    return await api.client.post(path, json=body)


async def sessions_per_user(database_url: str, user_ids: list[str]) -> dict[str, int]:
    """How many sessions the database holds for each user (what was really signed in, whatever
    the answers said)."""
    dsn = PG_DSN.rsplit("/", 1)[0] + "/" + database_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT user_id, count(*) AS n FROM sessions WHERE user_id = ANY($1) GROUP BY user_id",
            user_ids,
        )
    finally:
        await conn.close()
    return {row["user_id"]: int(row["n"]) for row in rows}

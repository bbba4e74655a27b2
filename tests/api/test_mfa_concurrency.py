"""Single use under real concurrency: parallel requests (asyncio.gather over the ASGI client)
racing for one TOTP time step, one recovery code, one mfa_token or one pending factor. The
database transaction has to serialise them (PostgreSQL row locks, SQLite's write lock); exactly
one may win (API.md "Login", "The signed-in user and their factors").

TOTP codes are always computed from the enrolment secret and the app's frozen clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyotp
import pytest
import pytest_asyncio

import support
from cloudmfa.clock import FrozenClock
from cloudmfa.store import recovery_codes as code_repo
from cloudmfa.store import sessions as session_repo
from cloudmfa.store.audit import list_events
from cloudmfa.store.ephemeral import Use
from cloudmfa.store.login_attempts import _attempt_id, _lease_key
from conftest import ALL_BACKENDS, Api, start_api
from conftest import test_settings as make_settings
from support import MfaUser

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)


@pytest_asyncio.fixture(scope="module")
async def api(backend: dict[str, Any]) -> AsyncIterator[Api]:
    """The module's app. The account throttle (10 failures) would turn some of 16 parallel
    attempts on one account into 429s; it has tests of its own, so here it is raised."""
    app, api = await start_api(make_settings(backend, login_max_failures=100))
    async with app.router.lifespan_context(app):
        async with api.client:
            yield api


async def mfa_user(api: Api, tag: str) -> MfaUser:
    user = await support.mfa_user(api, tag)
    api.clock.advance(seconds=30)  # past the step the activation consumed
    return user


async def mfa_tokens(api: Api, user: MfaUser, n: int) -> list[str]:
    tokens = []
    for _ in range(n):
        body = await api.login(user.email)
        assert body["status"] == "mfa_required", body
        tokens.append(body["mfa_token"])
    return tokens


def verify(api: Api, mfa_token: str, factor_id: str, code: str) -> Any:
    return api.client.post(
        "/api/v1/auth/verify", json={"mfa_token": mfa_token, "factor_id": factor_id, "code": code}
    )


def outcomes(responses: list[httpx.Response]) -> Counter[tuple[int, str | None]]:
    return Counter(
        (r.status_code, None if r.status_code == 200 else r.json().get("code")) for r in responses
    )


async def events_of(api: Api, user_id: str, type_: str) -> list[dict[str, Any]]:
    async with api.svc.engine.connect() as conn:
        return await list_events(conn, user_id=user_id, type_=type_, limit=500)


async def unused_recovery_codes(api: Api, user_id: str) -> int:
    async with api.svc.engine.connect() as conn:
        return await code_repo.count_unused(conn, user_id)


# --- one TOTP time step ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 8])
async def test_parallel_logins_with_one_totp_code_let_exactly_one_in(api: Api, n: int) -> None:
    user = await mfa_user(api, f"race{n}")
    tokens = await mfa_tokens(api, user, n)
    code = user.code(api)

    responses = await asyncio.gather(*(verify(api, t, user.factor_id, code) for t in tokens))

    assert outcomes(responses) == {(200, None): 1, (401, "invalid_code"): n - 1}, [
        r.text for r in responses
    ]
    assert len(await events_of(api, user.id, "mfa.succeeded")) == 1
    assert len(await events_of(api, user.id, "mfa.failed")) == n - 1
    otp_logins = [
        e for e in await events_of(api, user.id, "login.succeeded") if "otp" in e["details"]["amr"]
    ]
    assert len(otp_logins) == 1
    # The losers' attempts are still live, and only a later step lets one in.
    loser = next(t for t, r in zip(tokens, responses, strict=True) if r.status_code != 200)
    r = await verify(api, loser, user.factor_id, code)
    assert r.status_code == 401 and r.json()["code"] in {"invalid_code", "mfa_token_expired"}, (
        r.text
    )
    api.clock.advance(seconds=30)
    [fresh] = await mfa_tokens(api, user, 1)
    assert (await verify(api, fresh, user.factor_id, user.code(api))).status_code == 200


async def test_parallel_logins_on_two_replicas_share_one_totp_step(
    api: Api, backend: dict[str, Any]
) -> None:
    """Two app instances on one database: the row, not the process, decides."""
    user = await mfa_user(api, "replicas")
    app, replica = await start_api(
        make_settings(backend, login_max_failures=100), clock=FrozenClock(api.clock.now())
    )
    async with app.router.lifespan_context(app), replica.client:
        here = await mfa_tokens(api, user, 4)
        there = await mfa_tokens(replica, user, 4)
        code = user.code(api)

        responses = await asyncio.gather(
            *(verify(api, t, user.factor_id, code) for t in here),
            *(verify(replica, t, user.factor_id, code) for t in there),
        )

    assert outcomes(responses) == {(200, None): 1, (401, "invalid_code"): 7}, [
        r.text for r in responses
    ]


# --- one recovery code ----------------------------------------------------------------------


async def test_parallel_redemptions_of_one_recovery_code_let_exactly_one_in(api: Api) -> None:
    user = await mfa_user(api, "recrace")
    tokens = await mfa_tokens(api, user, 16)
    code = user.recovery_codes[0]

    responses = await asyncio.gather(*(verify(api, t, "recovery", code) for t in tokens))

    assert outcomes(responses) == {(200, None): 1, (401, "invalid_code"): 15}, [
        r.text for r in responses
    ]
    assert await unused_recovery_codes(api, user.id) == 9
    assert len(await events_of(api, user.id, "recovery_code.used")) == 1
    assert len(await events_of(api, user.id, "mfa.succeeded")) == 1


# --- one mfa_token --------------------------------------------------------------------------


async def test_parallel_verifications_of_one_mfa_token_open_one_session(api: Api) -> None:
    """Four different valid recovery codes on one mfa_token: one session, and the losers'
    codes stay unused (a verification waiting for the token, or finding it spent, spends
    nothing)."""
    user = await mfa_user(api, "tokenrace")
    [token] = await mfa_tokens(api, user, 1)
    codes = user.recovery_codes[:4]

    responses = await asyncio.gather(*(verify(api, token, "recovery", c) for c in codes))

    assert outcomes(responses) == {(200, None): 1, (401, "mfa_token_expired"): 3}, [
        r.text for r in responses
    ]
    assert await unused_recovery_codes(api, user.id) == 9
    assert len(await events_of(api, user.id, "recovery_code.used")) == 1
    for code, r in zip(codes, responses, strict=True):
        if r.status_code != 200:  # still unused: it signs in later
            [fresh] = await mfa_tokens(api, user, 1)
            assert (await verify(api, fresh, "recovery", code)).status_code == 200, code


async def test_totp_and_recovery_racing_on_one_mfa_token_spend_only_the_winner(api: Api) -> None:
    user = await mfa_user(api, "mixedrace")
    [token] = await mfa_tokens(api, user, 1)
    code = user.code(api)
    recovery = user.recovery_codes[0]

    totp_r, rec_r = await asyncio.gather(
        verify(api, token, user.factor_id, code), verify(api, token, "recovery", recovery)
    )

    assert sorted([totp_r.status_code, rec_r.status_code]) == [200, 401], (totp_r.text, rec_r.text)
    loser = rec_r if totp_r.status_code == 200 else totp_r
    assert loser.json()["code"] == "mfa_token_expired"
    [fresh] = await mfa_tokens(api, user, 1)
    if totp_r.status_code == 200:
        # The recovery code was not spent.
        assert await unused_recovery_codes(api, user.id) == 10
        assert (await verify(api, fresh, "recovery", recovery)).status_code == 200
    else:
        # The TOTP step was not spent.
        assert await unused_recovery_codes(api, user.id) == 9
        assert (await verify(api, fresh, user.factor_id, code)).status_code == 200


async def test_a_verification_refused_while_another_holds_the_token_counts_and_spends_nothing(
    api: Api,
) -> None:
    user = await mfa_user(api, "leased")
    [token] = await mfa_tokens(api, user, 1)
    code = user.code(api)
    # Hold the token as a verification in flight does (white box: the lease's key).
    lease = _lease_key(_attempt_id(token))
    assert await api.svc.ephemeral.set_if_absent(lease, "1", 60)

    refused = [await verify(api, token, user.factor_id, code) for _ in range(6)]

    for r in refused:
        body = support.assert_problem(r, 401, "mfa_token_expired")
        assert "another request" in body["detail"]
    await api.svc.ephemeral.delete(lease)
    # Six refusals counted no tries (five kill a token) and did not spend the code's step.
    support.assert_authenticated(await verify(api, token, user.factor_id, code))


async def test_a_sign_in_whose_token_was_spent_meanwhile_is_withdrawn(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a verification outlive its lease and another one spend the mfa_token first, the
    session it wrote is revoked and nothing is handed out."""
    user = await mfa_user(api, "outlived")
    [token] = await mfa_tokens(api, user, 1)
    store = api.svc.ephemeral
    begin_use = store.begin_use

    async def begin_then_lose_the_token(key: str, **kwargs: Any) -> Use:
        held = await begin_use(key, **kwargs)
        await store.delete(key)  # spent by the other verification
        return held

    monkeypatch.setattr(store, "begin_use", begin_then_lose_the_token)
    r = await verify(api, token, user.factor_id, user.code(api))

    support.assert_problem(r, 401, "mfa_token_expired")
    login = (await events_of(api, user.id, "login.succeeded"))[0]  # newest first: written
    assert "otp" in login["details"]["amr"]
    [revoked] = [
        e
        for e in await events_of(api, user.id, "session.revoked")
        if e["details"]["session_id"] == login["details"]["session_id"]
    ]
    assert revoked["details"]["reason"] == "mfa_token_already_used"
    async with api.svc.engine.connect() as conn:
        session = await session_repo.get_session(conn, login["details"]["session_id"])
    assert session is not None and session.revoked_at is not None


# --- one pending factor ---------------------------------------------------------------------


async def test_parallel_activation_of_one_pending_factor_succeeds_once(api: Api) -> None:
    user, headers = await api.signed_in("actrace")
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    factor = r.json()
    totp = pyotp.TOTP(factor["secret"])
    # Two valid codes (this step and the next), four requests each.
    codes = [totp.at(api.clock.now()), totp.at(api.clock.now(), counter_offset=1)] * 4

    responses = await asyncio.gather(
        *(
            api.client.post(
                f"/api/v1/me/factors/{factor['id']}/activate", json={"code": c}, headers=headers
            )
            for c in codes
        )
    )

    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses]
    # A loser lost the code (401), found the factor active (422), or, arriving after the
    # winner, found the account holding an active factor its password-only session may not
    # add to (403).
    refusals = {
        (401, "invalid_code"),
        (422, "validation_error"),
        (403, "reauthentication_required"),
    }
    for r in responses:
        if r.status_code != 200:
            assert (r.status_code, r.json()["code"]) in refusals, r.text
    body = winners[0].json()
    assert body["status"] == "active"
    assert len(body["recovery_codes"]) == 10
    assert len(await events_of(api, user["id"], "factor.activated")) == 1
    assert len(await events_of(api, user["id"], "recovery_codes.generated")) == 1
    # Exactly the winner's set is stored, and it works.
    assert await unused_recovery_codes(api, user["id"]) == 10
    login = await api.login(user["email"])
    assert login["status"] == "mfa_required"
    r = await verify(api, login["mfa_token"], "recovery", body["recovery_codes"][9])
    assert r.status_code == 200, r.text

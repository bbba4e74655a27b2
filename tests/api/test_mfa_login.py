"""The second step of login: mfa_token, challenge, verify, recovery codes (API.md "Login",
"Tokens" (amr/acr), "The signed-in user and their factors" (recovery codes, step-up),
"Audit events").

TOTP codes are always computed from the enrolment secret and the app's frozen clock; each time
step is accepted once per factor, so the clock moves 30 s between uses.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyotp
from sqlalchemy import event

from cloudmfa.flows.maintenance import reencrypt_secrets
from cloudmfa.security.secretbox import new_key
from cloudmfa.store import recovery_codes as code_repo
from cloudmfa.store.audit import list_events
from cloudmfa.store.ephemeral import MemoryStore
from cloudmfa.store.login_attempts import _attempt_id, _token_key
from conftest import ALL_BACKENDS, PASSWORD, Api, bearer
from support import (
    MfaUser,
    assert_authenticated,
    assert_problem,
    claims,
    mfa_user,
    verify,
)

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

RECOVERY_CODE = re.compile(r"^[A-Z0-9]{4}(-[A-Z0-9]{4}){4}$")


async def start(api: Api, user: MfaUser) -> dict[str, Any]:
    body = await api.login(user.email)
    assert body["status"] == "mfa_required", body
    return body


async def sign_in_with_totp(api: Api, user: MfaUser) -> dict[str, Any]:
    token = (await start(api, user))["mfa_token"]
    return assert_authenticated(await verify(api, token, user.factor_id, user.next_code(api)))


async def user_events(api: Api, user_id: str) -> list[dict[str, Any]]:
    async with api.svc.engine.connect() as conn:
        return await list_events(conn, user_id=user_id, limit=1000)


async def unused_recovery_codes(api: Api, user_id: str) -> int:
    async with api.svc.engine.connect() as conn:
        return await code_repo.count_unused(conn, user_id)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- the password step ----------------------------------------------------------------------


async def test_login_with_active_totp_answers_mfa_required(api: Api) -> None:
    user = await mfa_user(api, "required")

    r = await api.client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    )

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "mfa_required"
    assert isinstance(body["mfa_token"], str) and len(body["mfa_token"]) >= 22
    assert body["expires_in"] == 300
    for key in ("access_token", "refresh_token", "session_id"):
        assert key not in body
    factors = body["factors"]
    for entry in factors:
        assert {"id", "type", "label"} <= set(entry), entry
    assert [(f["id"], f["type"]) for f in factors] == [
        (user.factor_id, "totp"),
        ("recovery", "recovery"),
    ]
    assert user.secret not in r.text


async def test_the_password_step_reads_account_factors_and_codes_in_one_statement(
    api: Api,
) -> None:
    """Its three reads were three round trips (bench/README.md, "Where the password step's
    time goes"); the offer is the same: each active factor, oldest first, then recovery."""
    user = await mfa_user(api, "one-read")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engines = [api.svc.engine.sync_engine]
    if api.svc.reader.pool is not api.svc.engine.pool:  # SQLite's readers: an engine of their own
        engines.append(api.svc.reader.sync_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    try:
        body = await api.login(user.email)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
    assert body["status"] == "mfa_required"
    # (The notice of the factor just added may still be going out, in the background.)
    reads = [sql for sql in statements if "delivery_outbox" not in sql]
    assert len(reads) == 1, reads
    assert all(table in reads[0] for table in ("users", "factors", "recovery_codes"))
    assert [f["type"] for f in body["factors"]] == ["totp", "recovery"]


async def test_mfa_token_lives_five_minutes_in_the_store(api: Api) -> None:
    user = await mfa_user(api, "ttl")
    token = (await start(api, user))["mfa_token"]

    remaining = await api.svc.ephemeral.ttl(_token_key(_attempt_id(token)))

    assert 290 <= remaining <= 300, remaining
    if isinstance(api.svc.ephemeral, MemoryStore):  # the in-process store keeps the app's clock
        api.clock.advance(seconds=299)
        r = await api.client.post(
            "/api/v1/auth/challenge", json={"mfa_token": token, "factor_id": user.factor_id}
        )
        assert r.status_code == 200, r.text
        api.clock.advance(seconds=2)
        assert_problem(
            await verify(api, token, user.factor_id, user.code(api)), 401, "mfa_token_expired"
        )


# --- challenge ------------------------------------------------------------------------------


async def test_challenge_for_totp_and_recovery_sends_nothing(api: Api) -> None:
    user = await mfa_user(api, "challenge")
    token = (await start(api, user))["mfa_token"]

    for factor_id in (user.factor_id, "recovery"):
        r = await api.client.post(
            "/api/v1/auth/challenge", json={"mfa_token": token, "factor_id": factor_id}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {}
    # A challenge spends nothing: the token still completes the sign-in.
    assert_authenticated(await verify(api, token, user.factor_id, user.next_code(api)))


async def test_challenge_with_unknown_factor_or_token_is_refused(api: Api) -> None:
    user = await mfa_user(api, "badchallenge")
    other = await mfa_user(api, "otherchallenge")
    token = (await start(api, user))["mfa_token"]

    for factor_id in ("00000000-0000-4000-8000-000000000000", other.factor_id, "sms"):
        r = await api.client.post(
            "/api/v1/auth/challenge", json={"mfa_token": token, "factor_id": factor_id}
        )
        assert_problem(r, 401, "invalid_code")
    r = await api.client.post(
        "/api/v1/auth/challenge",
        json={"mfa_token": "not-a-live-token", "factor_id": user.factor_id},
    )
    assert_problem(r, 401, "mfa_token_expired")


# --- verify with TOTP -----------------------------------------------------------------------


async def test_verify_with_the_right_totp_code_signs_in_with_otp_amr(api: Api) -> None:
    user = await mfa_user(api, "verify")
    token = (await start(api, user))["mfa_token"]

    r = await verify(api, token, user.factor_id, user.next_code(api))

    body = assert_authenticated(r)
    assert "device_token" not in body
    assert r.headers["cache-control"] == "no-store"
    access = claims(body["access_token"])
    assert access["sub"] == user.id
    assert access["sid"] == body["session_id"]
    assert access["amr"] == ["pwd", "otp", "mfa"]
    assert "acr" not in access
    me = await api.client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["mfa_enabled"] is True
    # The factor records its use.
    factors = (
        await api.client.get("/api/v1/me/factors", headers=bearer(body["access_token"]))
    ).json()
    assert factors["factors"][0]["last_used_at"] is not None


async def test_mfa_token_is_single_use(api: Api) -> None:
    user = await mfa_user(api, "single")
    token = (await start(api, user))["mfa_token"]
    assert_authenticated(await verify(api, token, user.factor_id, user.next_code(api)))

    r = await verify(api, token, user.factor_id, user.next_code(api))

    assert_problem(r, 401, "mfa_token_expired")
    r = await verify(api, token, "recovery", user.recovery_codes[0])
    assert_problem(r, 401, "mfa_token_expired")
    assert await unused_recovery_codes(api, user.id) == 10


async def test_wrong_code_is_invalid_code_and_the_token_survives(api: Api) -> None:
    user = await mfa_user(api, "wrong")
    token = (await start(api, user))["mfa_token"]
    right = user.next_code(api)

    for code in (other_code(right), "abcdef", "1234567", "12345"):
        assert_problem(await verify(api, token, user.factor_id, code), 401, "invalid_code")

    assert_authenticated(await verify(api, token, user.factor_id, right))


async def test_five_wrong_codes_kill_the_mfa_token(api: Api) -> None:
    user = await mfa_user(api, "five")
    token = (await start(api, user))["mfa_token"]
    right = user.next_code(api)
    wrong = other_code(right)

    for _ in range(5):
        assert_problem(await verify(api, token, user.factor_id, wrong), 401, "invalid_code")

    # Dead at once (a challenge counts no attempt), and the right code no longer helps.
    r = await api.client.post(
        "/api/v1/auth/challenge", json={"mfa_token": token, "factor_id": user.factor_id}
    )
    assert_problem(r, 401, "mfa_token_expired")
    assert_problem(await verify(api, token, user.factor_id, right), 401, "mfa_token_expired")
    # The code was never spent: a new attempt signs in with it.
    fresh = (await start(api, user))["mfa_token"]
    assert_authenticated(await verify(api, fresh, user.factor_id, right))


async def test_totp_accepts_one_step_of_drift_and_no_more(api: Api) -> None:
    user = await mfa_user(api, "drift")
    api.clock.advance(seconds=120)  # well past the step the activation used
    token = (await start(api, user))["mfa_token"]

    for offset in (-2, 2, -3, 3):
        r = await verify(api, token, user.factor_id, user.code(api, offset))
        assert_problem(r, 401, "invalid_code")
    assert_authenticated(await verify(api, token, user.factor_id, user.code(api, -1)))

    api.clock.advance(seconds=60)
    token = (await start(api, user))["mfa_token"]
    assert_authenticated(await verify(api, token, user.factor_id, user.code(api, +1)))

    api.clock.advance(seconds=90)
    token = (await start(api, user))["mfa_token"]
    assert_authenticated(await verify(api, token, user.factor_id, user.code(api)))


async def test_same_time_step_is_refused_twice_across_logins(api: Api) -> None:
    user = await mfa_user(api, "replay")
    code = user.next_code(api)
    first = (await start(api, user))["mfa_token"]
    assert_authenticated(await verify(api, first, user.factor_id, code))

    second = (await start(api, user))["mfa_token"]
    assert_problem(await verify(api, second, user.factor_id, code), 401, "invalid_code")
    # Nor any step before it (the previous one is inside the drift window).
    assert_problem(
        await verify(api, second, user.factor_id, user.code(api, -1)), 401, "invalid_code"
    )

    assert_authenticated(await verify(api, second, user.factor_id, user.next_code(api)))


async def test_verify_with_unknown_or_foreign_factor_id_is_invalid_code(api: Api) -> None:
    user = await mfa_user(api, "unknownfactor")
    other = await mfa_user(api, "foreignfactor")
    token = (await start(api, user))["mfa_token"]
    api.clock.advance(seconds=30)

    r = await verify(api, token, "00000000-0000-4000-8000-000000000000", user.code(api))
    assert_problem(r, 401, "invalid_code")
    r = await verify(api, token, other.factor_id, other.code(api))
    assert_problem(r, 401, "invalid_code")

    body = assert_authenticated(await verify(api, token, user.factor_id, user.code(api)))
    assert claims(body["access_token"])["sub"] == user.id


async def test_verify_needs_exactly_one_proof(api: Api) -> None:
    user = await mfa_user(api, "proof")
    token = (await start(api, user))["mfa_token"]
    for body in (
        {"mfa_token": token, "factor_id": user.factor_id},
        {"mfa_token": token, "factor_id": user.factor_id, "code": "123456", "credential": {}},
        {"factor_id": user.factor_id, "code": "123456"},
    ):
        r = await api.client.post("/api/v1/auth/verify", json=body)
        assert_problem(r, 422, "validation_error")


async def test_unknown_mfa_token_is_mfa_token_expired(api: Api) -> None:
    user = await mfa_user(api, "unknowntoken")
    r = await verify(api, "x" * 43, user.factor_id, user.next_code(api))
    assert_problem(r, 401, "mfa_token_expired")


# --- the factor as the password step read it -----------------------------------------------
# The mfa_token keeps the offered TOTP factor as the password step read it (seed encrypted), so
# the verify step reads nothing before its write; the write's claim re-checks the factor.


async def test_the_mfa_token_keeps_no_seed_in_the_clear(api: Api) -> None:
    user = await mfa_user(api, "snapclear")
    token = (await start(api, user))["mfa_token"]

    state = await api.svc.ephemeral.get(_token_key(_attempt_id(token)))

    assert state is not None
    assert user.secret not in state
    assert user.secret.lower() not in state


async def test_a_step_spent_after_the_password_step_is_refused_all_the_same(api: Api) -> None:
    user = await mfa_user(api, "snapstale")
    code = user.next_code(api)
    stale = (await start(api, user))["mfa_token"]  # read before the step below is spent
    fresh = (await start(api, user))["mfa_token"]
    assert_authenticated(await verify(api, fresh, user.factor_id, code))

    assert_problem(await verify(api, stale, user.factor_id, code), 401, "invalid_code")
    assert_problem(
        await verify(api, stale, user.factor_id, user.code(api, -1)), 401, "invalid_code"
    )
    assert_authenticated(await verify(api, stale, user.factor_id, user.next_code(api)))


async def test_a_factor_removed_after_the_password_step_cannot_complete_it(api: Api) -> None:
    user = await mfa_user(api, "snapgone")
    pending = (await start(api, user))["mfa_token"]
    headers = bearer((await sign_in_with_totp(api, user))["access_token"])
    removed = await api.client.delete(f"/api/v1/me/factors/{user.factor_id}", headers=headers)
    assert removed.status_code == 204, removed.text
    before = len(await user_events(api, user.id))

    r = await verify(api, pending, user.factor_id, user.next_code(api))

    assert_problem(r, 401, "invalid_code")
    events = await user_events(api, user.id)
    assert [e["type"] for e in events[: len(events) - before]] == ["mfa.failed"]


async def test_a_secret_key_retired_between_the_steps_still_lets_the_code_in(api: Api) -> None:
    user = await mfa_user(api, "snaprotate")
    token = (await start(api, user))["mfa_token"]  # the seed kept under the old key
    box = api.svc.secretbox
    old_keys = list(box.keys)
    fresh = new_key(old_keys)
    box.use_keys([fresh, *old_keys])
    await reencrypt_secrets(api.svc)
    box.use_keys([fresh])  # the old key is gone from the ring
    try:
        assert_authenticated(await verify(api, token, user.factor_id, user.next_code(api)))
    finally:
        box.use_keys([fresh, *old_keys])  # every seed is under the fresh key now


# --- recovery codes at login ----------------------------------------------------------------


async def test_recovery_code_signs_in_with_rec_amr_once(api: Api) -> None:
    user = await mfa_user(api, "recovery")
    code = user.recovery_codes[3]
    token = (await start(api, user))["mfa_token"]

    body = assert_authenticated(await verify(api, token, "recovery", code))

    access = claims(body["access_token"])
    assert access["amr"] == ["pwd", "rec", "mfa"]
    assert "acr" not in access
    assert await unused_recovery_codes(api, user.id) == 9
    again = (await start(api, user))["mfa_token"]
    assert_problem(await verify(api, again, "recovery", code), 401, "invalid_code")
    assert_problem(await verify(api, again, "recovery", code.lower()), 401, "invalid_code")

    events = await user_events(api, user.id)
    used = [e for e in events if e["type"] == "recovery_code.used"]
    assert len(used) == 1
    assert used[0]["subject_id"] == user.id
    assert used[0]["outcome"] == "success"
    assert code not in json.dumps(events, default=str)


async def test_recovery_code_is_accepted_lower_case_and_without_dashes(api: Api) -> None:
    user = await mfa_user(api, "normalise")
    variants = [
        user.recovery_codes[0].lower(),
        user.recovery_codes[1].replace("-", ""),
        user.recovery_codes[2].replace("-", "").lower(),
    ]
    for code in variants:
        token = (await start(api, user))["mfa_token"]
        body = assert_authenticated(await verify(api, token, "recovery", code))
        assert claims(body["access_token"])["amr"] == ["pwd", "rec", "mfa"]
    assert await unused_recovery_codes(api, user.id) == 7


async def test_wrong_recovery_code_is_invalid_code(api: Api) -> None:
    user = await mfa_user(api, "wrongrec")
    other = await mfa_user(api, "otherrec")
    token = (await start(api, user))["mfa_token"]
    for code in ("AAAA-BBBB-CCCC-DDDD", other.recovery_codes[0], "x" * 100):
        assert_problem(await verify(api, token, "recovery", code), 401, "invalid_code")
    assert await unused_recovery_codes(api, user.id) == 10
    assert await unused_recovery_codes(api, other.id) == 10


async def test_recovery_is_no_longer_offered_once_every_code_is_used(api: Api) -> None:
    user = await mfa_user(api, "exhaust")
    for i, code in enumerate(user.recovery_codes):
        body = await start(api, user)
        assert [f["id"] for f in body["factors"]] == [user.factor_id, "recovery"], i
        assert_authenticated(await verify(api, body["mfa_token"], "recovery", code))

    body = await start(api, user)

    assert [(f["id"], f["type"]) for f in body["factors"]] == [(user.factor_id, "totp")]
    r = await verify(api, body["mfa_token"], "recovery", user.recovery_codes[0])
    assert_problem(r, 401, "invalid_code")
    assert_authenticated(await verify(api, body["mfa_token"], user.factor_id, user.next_code(api)))


# --- new recovery codes (step-up) -----------------------------------------------------------


async def test_new_recovery_codes_replace_the_whole_set(api: Api) -> None:
    user = await mfa_user(api, "regen")
    tokens = await sign_in_with_totp(api, user)

    r = await api.client.post("/api/v1/me/recovery-codes", headers=bearer(tokens["access_token"]))

    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    new_codes = r.json()["recovery_codes"]
    assert len(new_codes) == 10 and len(set(new_codes)) == 10
    assert all(RECOVERY_CODE.match(c) for c in new_codes), new_codes
    assert not set(new_codes) & set(user.recovery_codes)
    assert await unused_recovery_codes(api, user.id) == 10
    token = (await start(api, user))["mfa_token"]
    for old in user.recovery_codes[:3]:
        assert_problem(await verify(api, token, "recovery", old), 401, "invalid_code")
    body = assert_authenticated(await verify(api, token, "recovery", new_codes[0]))
    assert claims(body["access_token"])["amr"] == ["pwd", "rec", "mfa"]

    events = [e for e in await user_events(api, user.id) if e["type"] == "recovery_codes.generated"]
    assert len(events) == 2  # at activation, and now
    assert events[0]["details"]["count"] == 10
    assert not any(c in json.dumps(events, default=str) for c in new_codes)


async def test_new_recovery_codes_from_an_old_session_need_reauthentication(api: Api) -> None:
    user = await mfa_user(api, "oldregen")
    tokens = await sign_in_with_totp(api, user)
    api.clock.advance(minutes=11)
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert r.status_code == 200, r.text
    headers = bearer(r.json()["access_token"])

    r = await api.client.post("/api/v1/me/recovery-codes", headers=headers)

    assert_problem(r, 403, "reauthentication_required")
    # Nothing changed: the old codes still work.
    token = (await start(api, user))["mfa_token"]
    assert_authenticated(await verify(api, token, "recovery", user.recovery_codes[0]))


async def test_new_recovery_codes_from_a_password_only_session_need_reauthentication(
    api: Api,
) -> None:
    user, headers = await api.signed_in("pwdonly")
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    factor = r.json()
    r = await api.client.post(
        f"/api/v1/me/factors/{factor['id']}/activate",
        json={"code": pyotp.TOTP(factor["secret"]).at(api.clock.now())},
        headers=headers,
    )
    assert r.status_code == 200, r.text

    r = await api.client.post("/api/v1/me/recovery-codes", headers=headers)

    assert_problem(r, 403, "reauthentication_required")


async def test_no_recovery_codes_without_a_factor(api: Api) -> None:
    """They back up a real factor; an account with none gets a 422, and no codes are made."""
    _, headers = await api.signed_in("nocodes")

    r = await api.client.post("/api/v1/me/recovery-codes", headers=headers)

    assert_problem(r, 422, "validation_error")
    assert "second factor" in r.json()["detail"]


async def test_recovery_code_session_satisfies_step_up(api: Api) -> None:
    user = await mfa_user(api, "recstep")
    token = (await start(api, user))["mfa_token"]
    tokens = assert_authenticated(await verify(api, token, "recovery", user.recovery_codes[0]))

    r = await api.client.post("/api/v1/me/recovery-codes", headers=bearer(tokens["access_token"]))

    assert r.status_code == 200, r.text
    assert len(r.json()["recovery_codes"]) == 10


# --- the audit trail ------------------------------------------------------------------------


async def test_mfa_login_is_audited_without_codes_or_secrets(api: Api) -> None:
    user = await mfa_user(api, "trail")
    token = (await start(api, user))["mfa_token"]
    right = user.next_code(api)
    wrong = other_code(right)
    assert_problem(await verify(api, token, user.factor_id, wrong), 401, "invalid_code")
    assert_problem(await verify(api, token, "recovery", "AAAA-BBBB-CCCC-DDDD"), 401, "invalid_code")
    tokens = assert_authenticated(await verify(api, token, user.factor_id, right))
    rec_token = (await start(api, user))["mfa_token"]
    rec_tokens = assert_authenticated(
        await verify(api, rec_token, "recovery", user.recovery_codes[5])
    )

    events = await user_events(api, user.id)

    failed = [e for e in events if e["type"] == "mfa.failed"]
    assert len(failed) == 2
    assert all(e["outcome"] == "failure" and e["subject_id"] == user.id for e in failed)
    assert {e["details"]["factor_id"] for e in failed} == {user.factor_id, "recovery"}
    succeeded = [e for e in events if e["type"] == "mfa.succeeded"]
    assert len(succeeded) == 2
    assert all(e["outcome"] == "success" and e["subject_id"] == user.id for e in succeeded)
    assert [e["details"]["factor_type"] for e in succeeded] == ["recovery", "totp"]  # newest first
    logins = [e for e in events if e["type"] == "login.succeeded"]
    by_session = {e["details"]["session_id"]: e for e in logins}
    assert by_session[tokens["session_id"]]["details"]["amr"] == ["pwd", "otp", "mfa"]
    assert by_session[rec_tokens["session_id"]]["details"]["amr"] == ["pwd", "rec", "mfa"]
    assert by_session[tokens["session_id"]]["ip"] == "127.0.0.1"

    async with api.svc.engine.connect() as conn:
        everything = await list_events(conn, limit=100_000)
    trail = json.dumps(everything, default=str)
    assert user.secret not in trail
    for code in user.recovery_codes:
        assert code not in trail
        assert code.replace("-", "") not in trail
    for secret in (token, rec_token, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in trail
    own = json.dumps(events, default=str)
    for code in (right, wrong):
        assert code not in own

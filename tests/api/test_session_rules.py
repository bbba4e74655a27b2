"""The session and administration rules of API.md ("MFA policy", "Step-up", "Administration",
"Throttling"): what a session may do follows from what it proved (its amr and auth_time), never
from the account's current state."""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from cloudmfa.flows.accounts import create_admin
from conftest import ALL_BACKENDS, PASSWORD, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import (
    add_totp,
    admin_session,
    admin_user,
    assert_authenticated,
    assert_problem,
    mfa_sign_in,
    mfa_user,
)

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

ADMIN_USER_AGENT = "admin-console/9.3 (secret-workstation)"


@pytest_asyncio.fixture(scope="module")
async def required_api(backend: dict[str, Any]) -> AsyncIterator[Api]:
    """The same service under the `required` MFA policy (no grace period)."""
    app, api = await start_api(make_settings(backend, mfa_policy="required"))
    async with app.router.lifespan_context(app):
        async with api.client:
            yield api


def admin_reads(user_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", "/api/v1/admin/users"),
        ("GET", f"/api/v1/admin/users/{user_id}"),
        ("GET", "/api/v1/admin/audit"),
    ]


def admin_changes(user_id: str) -> list[tuple[str, str]]:
    return [
        ("POST", f"/api/v1/admin/users/{user_id}/lock"),
        ("POST", f"/api/v1/admin/users/{user_id}/unlock"),
        ("DELETE", f"/api/v1/admin/users/{user_id}/factors"),
    ]


async def refreshed(api: Api, tokens: dict[str, Any]) -> dict[str, Any]:
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    return assert_authenticated(r)


async def assert_not_locked(api: Api, email: str) -> None:
    r = await api.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text


# --- 1. confinement belongs to the session --------------------------------------------------


async def test_required_policy_keeps_the_session_that_activated_the_first_factor_confined(
    required_api: Api,
) -> None:
    api = required_api
    account = await api.sign_up()
    tokens = await api.login(account["email"])
    assert tokens["mfa_enrollment_required"] is True
    headers = bearer(tokens["access_token"])
    user = await add_totp(api, account["id"], account["email"], headers)

    for session in (tokens, await refreshed(api, tokens)):
        confined = bearer(session["access_token"])
        for path in ("/api/v1/me/sessions", "/api/v1/me/factors", "/api/v1/me/events"):
            r = await api.client.get(path, headers=confined)
            assert_problem(r, 403, "reauthentication_required")
        r = await api.client.post("/api/v1/me/recovery-codes", headers=confined)
        assert_problem(r, 403, "reauthentication_required")
        me = await api.client.get("/api/v1/me", headers=confined)
        assert me.status_code == 200, me.text
        assert me.json()["mfa_enabled"] is True

    # Signing in again with the factor ends the confinement.
    full = bearer((await mfa_sign_in(api, user))["access_token"])
    r = await api.client.get("/api/v1/me/sessions", headers=full)
    assert r.status_code == 200, r.text
    # The confined session can still log out.
    r = await api.client.post("/api/v1/auth/logout", headers=headers)
    assert r.status_code == 204, r.text


async def test_required_policy_lets_a_remembered_device_session_out_of_confinement(
    required_api: Api,
) -> None:
    api = required_api
    user = await mfa_user(api, "remembered")
    device_token = (await mfa_sign_in(api, user, remember=True))["device_token"]

    r = await api.client.post(
        "/api/v1/auth/login",
        json={"email": user.email, "password": PASSWORD, "device_token": device_token},
    )
    session = assert_authenticated(r)

    r = await api.client.get("/api/v1/me/sessions", headers=bearer(session["access_token"]))
    assert r.status_code == 200, r.text


async def test_required_policy_confines_the_admin_session_that_activated_its_factor(
    required_api: Api,
) -> None:
    api = required_api
    target = await api.sign_up()
    email = api.new_email("admin")
    result = await create_admin(api.svc, email=email, password=PASSWORD)
    tokens = await api.login(email)
    headers = bearer(tokens["access_token"])
    await add_totp(api, result.user.id, email, headers)

    for method, path in admin_reads(target["id"]) + admin_changes(target["id"]):
        r = await api.client.request(method, path, headers=headers)
        assert_problem(r, 403, "reauthentication_required")
    await assert_not_locked(api, target["email"])


# --- 2. administration needs a verified second factor, changes need step-up -----------------


async def test_an_admin_without_a_factor_must_enrol_one_whatever_the_policy(api: Api) -> None:
    target = await api.sign_up()
    email = api.new_email("nofactor")
    await create_admin(api.svc, email=email, password=PASSWORD)
    headers = bearer((await api.login(email))["access_token"])  # the optional policy

    for method, path in admin_reads(target["id"]) + admin_changes(target["id"]):
        r = await api.client.request(method, path, headers=headers)
        assert_problem(r, 403, "mfa_enrollment_required")
    await assert_not_locked(api, target["email"])
    # The rest of the account works under the optional policy.
    assert (await api.client.get("/api/v1/me/sessions", headers=headers)).status_code == 200


async def test_an_admin_session_without_a_second_factor_is_refused_administration(
    api: Api,
) -> None:
    target = await api.sign_up()
    email = api.new_email("pwdonly")
    result = await create_admin(api.svc, email=email, password=PASSWORD)
    tokens = await api.login(email)
    await add_totp(api, result.user.id, email, bearer(tokens["access_token"]))

    for session in (tokens, await refreshed(api, tokens)):
        headers = bearer(session["access_token"])
        for method, path in admin_reads(target["id"]) + admin_changes(target["id"]):
            r = await api.client.request(method, path, headers=headers)
            assert_problem(r, 403, "reauthentication_required")
    await assert_not_locked(api, target["email"])


async def test_a_remembered_device_admin_session_is_refused_administration(api: Api) -> None:
    """The strict reading: no factor was verified in a remembered-device session."""
    target = await api.sign_up()
    admin = await admin_user(api, "device")
    device_token = (await mfa_sign_in(api, admin, remember=True))["device_token"]
    r = await api.client.post(
        "/api/v1/auth/login",
        json={"email": admin.email, "password": PASSWORD, "device_token": device_token},
    )
    headers = bearer(assert_authenticated(r)["access_token"])

    for method, path in admin_reads(target["id"]) + admin_changes(target["id"]):
        r = await api.client.request(method, path, headers=headers)
        assert_problem(r, 403, "reauthentication_required")
    await assert_not_locked(api, target["email"])


async def test_lock_unlock_and_mfa_reset_need_a_recent_sign_in_reads_do_not(api: Api) -> None:
    target = await mfa_user(api, "target")
    _, headers = await admin_session(api)
    tokens = await mfa_sign_in(api, await admin_user(api, "stale"))
    api.clock.advance(seconds=api.svc.settings.reauth_window_s + 60)
    stale = bearer((await refreshed(api, tokens))["access_token"])

    for method, path in admin_reads(target.id):
        r = await api.client.request(method, path, headers=stale)
        assert r.status_code == 200, (path, r.text)
    for method, path in admin_changes(target.id):
        r = await api.client.request(method, path, headers=stale)
        assert_problem(r, 403, "reauthentication_required")
    # Nothing happened: the target still signs in with their factor.
    assert (await mfa_sign_in(api, target))["status"] == "authenticated"
    # A fresh MFA session of an administrator may.
    headers = bearer((await mfa_sign_in(api, await admin_user(api, "fresh")))["access_token"])
    r = await api.client.delete(f"/api/v1/admin/users/{target.id}/factors", headers=headers)
    assert r.status_code == 204, r.text


# --- 3. a wrong current password counts against the account limit ----------------------------


async def change_password(api: Api, headers: dict[str, str], current: str) -> httpx.Response:
    return await api.client.post(
        "/api/v1/me/password",
        json={"current_password": current, "new_password": "quiet-harbour-lemon-kite-88"},
        headers=headers,
    )


async def test_wrong_current_passwords_count_against_the_account_limit(api: Api) -> None:
    user, headers = await api.signed_in("guesser")
    limit = api.svc.settings.login_max_failures
    for i in range(limit):
        r = await change_password(api, headers, f"wrong-guess-number-{i}")
        assert_problem(r, 401, "invalid_credentials")

    r = await change_password(api, headers, "wrong-guess-once-more")
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 0
    # Not even the right password is checked now, and login is throttled too.
    assert_problem(await change_password(api, headers, PASSWORD), 429, "rate_limited")
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD}
    )
    assert_problem(r, 429, "rate_limited")


async def test_a_throttled_account_gets_429_on_password_change(api: Api) -> None:
    user, headers = await api.signed_in("throttled")
    for i in range(api.svc.settings.login_max_failures):
        r = await api.client.post(
            "/api/v1/auth/login", json={"email": user["email"], "password": f"wrong-{i}-pass"}
        )
        assert_problem(r, 401, "invalid_credentials")

    assert_problem(await change_password(api, headers, PASSWORD), 429, "rate_limited")


async def test_a_right_current_password_does_not_use_up_the_limit(api: Api) -> None:
    user, headers = await api.signed_in("honest")
    limit = api.svc.settings.login_max_failures
    for i in range(limit - 1):
        assert_problem(
            await change_password(api, headers, f"wrong-{i}-pass"), 401, "invalid_credentials"
        )

    r = await change_password(api, headers, PASSWORD)

    assert r.status_code == 204, r.text
    r = await api.client.post(
        "/api/v1/auth/login",
        json={"email": user["email"], "password": "quiet-harbour-lemon-kite-88"},
    )
    assert r.status_code == 200, r.text


# --- 4. /me/events names an administrator only by role --------------------------------------


async def test_own_events_name_an_administrator_only_by_role(api: Api) -> None:
    user = await mfa_user(api, "watched")
    admin, headers = await admin_session(api)
    agent = {**headers, "User-Agent": ADMIN_USER_AGENT}
    for action in ("lock", "unlock"):
        r = await api.client.post(f"/api/v1/admin/users/{user.id}/{action}", headers=agent)
        assert r.status_code == 204, r.text
    r = await api.client.delete(f"/api/v1/admin/users/{user.id}/factors", headers=agent)
    assert r.status_code == 204, r.text
    own = bearer((await api.login(user.email))["access_token"])

    r = await api.client.get("/api/v1/me/events", headers=own, params={"limit": 200})

    assert r.status_code == 200, r.text
    events = r.json()["events"]
    by_admin = [
        e for e in events if e["type"] in ("account.locked", "account.unlocked", "mfa.reset")
    ]
    assert len(by_admin) == 3
    for event in by_admin:
        assert event["actor"] == {"role": "admin"}
        assert event["actor_id"] is None
        assert event["ip"] is None
        assert event["user_agent"] is None
        assert event["subject_id"] == user.id
    dump = json.dumps(events)
    assert admin.id not in dump
    assert admin.email not in dump
    assert ADMIN_USER_AGENT not in dump
    for event in events:
        if event not in by_admin:
            assert event["actor"] == {"role": "user"}
            assert event["actor_id"] == user.id
    # The administrators' trail keeps everything.
    r = await api.client.get(
        "/api/v1/admin/audit", params={"user_id": user.id, "type": "mfa.reset"}, headers=headers
    )
    [event] = r.json()["events"]
    assert event["actor_id"] == admin.id
    assert event["ip"] == "127.0.0.1"
    assert event["user_agent"] == ADMIN_USER_AGENT


# --- 5. login normalises the email exactly as sign-up ---------------------------------------


async def test_login_finds_the_account_by_any_spelling_sign_up_accepts(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    nfc = unicodedata.normalize("NFC", f"Zoë.Ångström-{tag}@Bücher.example")
    r = await api.client.post("/api/v1/accounts", json={"email": nfc, "password": PASSWORD})
    assert r.status_code == 201, r.text
    stored = r.json()["email"]
    assert stored == f"zoë.ångström-{tag}@xn--bcher-kva.example"

    spellings = [
        nfc,
        unicodedata.normalize("NFD", nfc),
        f"ZOË.ÅNGSTRÖM-{tag.upper()}@XN--BCHER-KVA.EXAMPLE",
        unicodedata.normalize("NFD", f"zoë.ångström-{tag}@xn--bcher-kva.example"),
        f"  {stored}  ",
    ]
    for spelling in spellings:
        r = await api.client.post(
            "/api/v1/auth/login", json={"email": spelling, "password": PASSWORD}
        )
        assert r.status_code == 200, (spelling, r.text)
        r = await api.client.post(
            "/api/v1/accounts", json={"email": spelling.strip(), "password": PASSWORD}
        )
        assert_problem(r, 409, "email_taken")


async def test_create_admin_finds_the_account_by_another_spelling(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    account = await api.sign_up(f"rené-{tag}@exämple.org")

    result = await create_admin(
        api.svc,
        email=unicodedata.normalize("NFD", f"RENÉ-{tag}@xn--exmple-cua.org"),
        password=PASSWORD,
    )

    assert result.created is False
    assert result.user.id == account["id"]


# --- 8. the first factor needs a recent sign-in ---------------------------------------------


async def test_first_factor_enrolment_needs_a_sign_in_within_the_step_up_window(
    api: Api,
) -> None:
    account = await api.sign_up()
    tokens = await api.login(account["email"])
    window = api.svc.settings.reauth_window_s
    api.clock.advance(seconds=window - 60)
    tokens = await refreshed(api, tokens)
    r = await api.client.post(
        "/api/v1/me/factors", json={"type": "totp"}, headers=bearer(tokens["access_token"])
    )
    assert r.status_code == 201, r.text

    api.clock.advance(seconds=120)
    old = bearer((await refreshed(api, tokens))["access_token"])
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=old)
    assert_problem(r, 403, "reauthentication_required")
    # A fresh sign-in may.
    fresh = bearer((await api.login(account["email"]))["access_token"])
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=fresh)
    assert r.status_code == 201, r.text

"""POST /api/v1/auth/login with a password (API.md "Login", "Accounts", "Audit events")."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import bcrypt
import httpx
from argon2 import PasswordHasher, Type, extract_parameters

from cloudmfa.flows.accounts import create_admin
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import list_events
from cloudmfa.store.users import User
from conftest import ALL_BACKENDS, FAST_ARGON2, PASSWORD, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import TOKEN_KEYS, admin_session, assert_problem

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)


async def login_raw(api: Api, email: str, password: str) -> httpx.Response:
    return await api.client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def stored_user(api: Api, user_id: str) -> User:
    async with api.svc.engine.connect() as conn:
        user = await user_repo.get_by_id(conn, user_id)
    assert user is not None
    return user


async def admin_headers(api: Api) -> dict[str, str]:
    """Sign in as a new administrator (made the way `cloudmfa create-admin` makes one), with
    the second factor administration needs."""
    return (await admin_session(api))[1]


def parse_rfc3339(value: str) -> datetime:
    assert value.endswith("Z") or value.endswith("+00:00"), value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)
    return parsed


# --- success ----------------------------------------------------------------------------


async def test_login_returns_authenticated_token_set(api: Api) -> None:
    account = await api.sign_up()
    r = await login_raw(api, account["email"], PASSWORD)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "no-store" in r.headers["cache-control"]
    body = r.json()
    assert TOKEN_KEYS <= set(body), body
    assert body["status"] == "authenticated"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    for key in ("access_token", "refresh_token", "session_id"):
        assert isinstance(body[key], str) and body[key]
    assert body["access_token"] != body["refresh_token"]
    # The optional MFA policy asks for no enrolment.
    assert not body.get("mfa_enrollment_required", False)
    assert "mfa_enrollment_deadline" not in body
    me = await api.client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == account["id"]


async def test_login_email_is_case_insensitive(api: Api) -> None:
    account = await api.sign_up()
    r = await login_raw(api, account["email"].upper(), PASSWORD)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "authenticated"


async def test_each_login_opens_a_new_session(api: Api) -> None:
    account = await api.sign_up()
    first = await api.login(account["email"])
    second = await api.login(account["email"])
    assert first["session_id"] != second["session_id"]
    assert first["refresh_token"] != second["refresh_token"]


# --- failures ---------------------------------------------------------------------------


async def test_wrong_password_and_unknown_email_give_identical_401(api: Api) -> None:
    account = await api.sign_up()
    wrong = await login_raw(api, account["email"], "not-the-right-passphrase-1")
    unknown = await login_raw(api, api.new_email("nobody"), "not-the-right-passphrase-1")
    body = assert_problem(wrong, 401, "invalid_credentials")
    assert_problem(unknown, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()
    assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")
    assert "access_token" not in body
    assert "not-the-right-passphrase-1" not in wrong.text


async def test_malformed_email_at_login_is_invalid_credentials(api: Api) -> None:
    r = await login_raw(api, "not-an-email", PASSWORD)
    assert_problem(r, 401, "invalid_credentials")


async def test_locked_account_is_account_locked_only_with_the_right_password(api: Api) -> None:
    account = await api.sign_up()
    session = await api.login(account["email"])
    admin = await admin_headers(api)
    r = await api.client.post(f"/api/v1/admin/users/{account['id']}/lock", headers=admin)
    assert r.status_code == 204, r.text

    right = await login_raw(api, account["email"], PASSWORD)
    assert_problem(right, 403, "account_locked")
    # A guesser learns nothing: a wrong password reads exactly like any other.
    wrong = await login_raw(api, account["email"], "not-the-right-passphrase-1")
    unknown = await login_raw(api, api.new_email("nobody"), "not-the-right-passphrase-1")
    assert_problem(wrong, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()
    # Locking ended the session that was open.
    me = await api.client.get("/api/v1/me", headers=bearer(session["access_token"]))
    assert_problem(me, 401, "invalid_token")
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert_problem(r, 401, "invalid_token")

    r = await api.client.post(f"/api/v1/admin/users/{account['id']}/unlock", headers=admin)
    assert r.status_code == 204, r.text
    again = await login_raw(api, account["email"], PASSWORD)
    assert again.status_code == 200, again.text


# --- the required MFA policy ------------------------------------------------------------


async def test_required_policy_confines_password_only_session_to_me_and_logout(
    backend: dict[str, Any],
) -> None:
    app, api = await start_api(make_settings(backend, mfa_policy="required"))
    async with app.router.lifespan_context(app), api.client:
        account = await api.sign_up()
        r = await login_raw(api, account["email"], PASSWORD)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "authenticated"
        assert body["mfa_enrollment_required"] is True
        assert "mfa_enrollment_deadline" not in body
        headers = bearer(body["access_token"])

        me = await api.client.get("/api/v1/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["id"] == account["id"]
        assert me.json()["mfa_enabled"] is False

        sessions = await api.client.get("/api/v1/me/sessions", headers=headers)
        assert_problem(sessions, 403, "mfa_enrollment_required")

        logout = await api.client.post("/api/v1/auth/logout", headers=headers)
        assert logout.status_code == 204, logout.text
        after = await api.client.get("/api/v1/me", headers=headers)
        assert_problem(after, 401, "invalid_token")


async def test_required_policy_confines_password_only_admin_too(backend: dict[str, Any]) -> None:
    app, api = await start_api(make_settings(backend, mfa_policy="required"))
    async with app.router.lifespan_context(app), api.client:
        email = api.new_email("admin")
        await create_admin(api.svc, email=email, password=PASSWORD)
        body = await api.login(email)
        assert body["mfa_enrollment_required"] is True
        headers = bearer(body["access_token"])
        me = await api.client.get("/api/v1/me", headers=headers)
        assert me.status_code == 200, me.text
        assert "admin" in me.json()["roles"]
        for path in ("/api/v1/admin/users", "/api/v1/admin/audit"):
            r = await api.client.get(path, headers=headers)
            assert_problem(r, 403, "mfa_enrollment_required")
        r = await api.client.post(f"/api/v1/admin/users/{me.json()['id']}/lock", headers=headers)
        assert_problem(r, 403, "mfa_enrollment_required")


async def test_grace_days_give_full_access_until_the_deadline(backend: dict[str, Any]) -> None:
    app, api = await start_api(make_settings(backend, mfa_policy="required", mfa_grace_days=3))
    async with app.router.lifespan_context(app), api.client:
        account = await api.sign_up()
        body = await api.login(account["email"])
        assert not body.get("mfa_enrollment_required", False)
        headers = bearer(body["access_token"])
        me = await api.client.get("/api/v1/me", headers=headers)
        assert me.status_code == 200, me.text
        created_at = parse_rfc3339(me.json()["created_at"])
        deadline = parse_rfc3339(body["mfa_enrollment_deadline"])
        assert deadline == created_at + timedelta(days=3)

        sessions = await api.client.get("/api/v1/me/sessions", headers=headers)
        assert sessions.status_code == 200, sessions.text
        assert [s["id"] for s in sessions.json()["sessions"]] == [body["session_id"]]

        # Five minutes before the deadline: still in grace.
        api.clock.advance(days=3, minutes=-5)
        late = await api.login(account["email"])
        assert not late.get("mfa_enrollment_required", False)
        assert parse_rfc3339(late["mfa_enrollment_deadline"]) == deadline
        late_headers = bearer(late["access_token"])
        r = await api.client.get("/api/v1/me/sessions", headers=late_headers)
        assert r.status_code == 200, r.text

        # Past the deadline, the same (still unexpired) token is confined.
        api.clock.advance(minutes=6)
        r = await api.client.get("/api/v1/me/sessions", headers=late_headers)
        assert_problem(r, 403, "mfa_enrollment_required")
        assert (await api.client.get("/api/v1/me", headers=late_headers)).status_code == 200

        # And a new login says so.
        after = await api.login(account["email"])
        assert after["mfa_enrollment_required"] is True
        r = await api.client.get("/api/v1/me/sessions", headers=bearer(after["access_token"]))
        assert_problem(r, 403, "mfa_enrollment_required")


# --- hashes: imported and outdated ones are upgraded ------------------------------------


async def insert_with_hash(api: Api, password_hash: str) -> dict[str, str]:
    user = User(
        id=str(uuid.uuid4()),
        email=api.new_email("imported"),
        display_name=None,
        password_hash=password_hash,
        roles=(),
        locked_at=None,
        created_at=api.clock.now(),
    )
    async with api.svc.engine.begin() as conn:
        await user_repo.insert_user(conn, user)
    return {"id": user.id, "email": user.email}


async def test_imported_bcrypt_hash_signs_in_and_is_upgraded_to_argon2id(api: Api) -> None:
    bcrypt_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    account = await insert_with_hash(api, bcrypt_hash)

    wrong = await login_raw(api, account["email"], "not-the-right-passphrase-1")
    assert_problem(wrong, 401, "invalid_credentials")
    assert (await stored_user(api, account["id"])).password_hash == bcrypt_hash

    r = await login_raw(api, account["email"], PASSWORD)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "authenticated"
    upgraded = (await stored_user(api, account["id"])).password_hash
    assert upgraded.startswith("$argon2id$")
    assert PasswordHasher().verify(upgraded, PASSWORD)
    # The upgraded hash keeps working.
    assert (await login_raw(api, account["email"], PASSWORD)).status_code == 200


async def test_argon2_hash_with_outdated_parameters_is_upgraded_at_login(api: Api) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=4096, parallelism=1, type=Type.ID)
    old_hash = old.hash(PASSWORD)
    account = await insert_with_hash(api, old_hash)

    r = await login_raw(api, account["email"], PASSWORD)
    assert r.status_code == 200, r.text
    new_hash = (await stored_user(api, account["id"])).password_hash
    assert new_hash != old_hash
    params = extract_parameters(new_hash)
    assert params.type is Type.ID
    assert params.memory_cost == FAST_ARGON2["argon2_memory_kib"]
    assert params.time_cost == FAST_ARGON2["argon2_time_cost"]
    assert PasswordHasher().verify(new_hash, PASSWORD)

    # A current hash is left alone.
    assert (await login_raw(api, account["email"], PASSWORD)).status_code == 200
    assert (await stored_user(api, account["id"])).password_hash == new_hash


# --- the audit trail --------------------------------------------------------------------


async def test_login_writes_succeeded_and_failed_events_without_the_password(api: Api) -> None:
    account = await api.sign_up()
    wrong_password = "wrong-" + uuid.uuid4().hex
    unknown_email = api.new_email("ghost")
    r = await login_raw(api, account["email"], wrong_password)
    assert_problem(r, 401, "invalid_credentials")
    r = await login_raw(api, unknown_email, wrong_password)
    assert_problem(r, 401, "invalid_credentials")
    tokens = await api.login(account["email"])

    async with api.svc.engine.connect() as conn:
        own = await list_events(conn, user_id=account["id"], limit=200)
        everything = await list_events(conn, limit=10_000)

    succeeded = [e for e in own if e["type"] == "login.succeeded"]
    assert len(succeeded) == 1
    assert succeeded[0]["outcome"] == "success"
    assert succeeded[0]["subject_id"] == account["id"]
    assert succeeded[0]["ip"] == "127.0.0.1"
    assert succeeded[0]["details"]["session_id"] == tokens["session_id"]

    failed = [e for e in own if e["type"] == "login.failed"]
    assert len(failed) == 1
    assert failed[0]["outcome"] == "failure"
    assert failed[0]["subject_id"] == account["id"]
    assert any(
        e["type"] == "login.failed" and e["subject_id"] is None and e["outcome"] == "failure"
        for e in everything
    )

    trail = json.dumps(everything, default=str)
    for secret in (PASSWORD, wrong_password, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in trail

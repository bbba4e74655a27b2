"""Remembered devices, removing factors and the administrator's MFA reset (API.md
"Remembered devices", "The signed-in user and their factors", "Administration", "Audit events").

TOTP codes are always computed from the enrolment secret and the app's frozen clock; each time
step is accepted once per factor, so the clock moves 30 s between uses.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import jwt
import pyotp
from sqlalchemy import select

from cloudmfa.security.tokens import hash_opaque_token
from cloudmfa.store import recovery_codes as code_repo
from cloudmfa.store.audit import list_events
from cloudmfa.store.models import remembered_devices
from conftest import ALL_BACKENDS, PASSWORD, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import MfaUser, admin_session, assert_problem, mfa_user

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

DEVICE_KEYS = {"id", "created_at", "last_used_at", "user_agent", "ip"}
NEW_PASSWORD = "saffron-glacier-lantern-97"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")


def parse_utc(value: str) -> datetime:
    assert RFC3339_UTC.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def amr_of(body: dict[str, Any]) -> list[str]:
    return list(jwt.decode(body["access_token"], options={"verify_signature": False})["amr"])


async def login_raw(
    api: Api, email: str, password: str = PASSWORD, device_token: str | None = None, **headers: str
) -> dict[str, Any]:
    body: dict[str, Any] = {"email": email, "password": password}
    if device_token is not None:
        body["device_token"] = device_token
    r = await api.client.post("/api/v1/auth/login", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def sign_in(
    api: Api, user: MfaUser, *, remember: bool = False, password: str = PASSWORD, **headers: str
) -> dict[str, Any]:
    """Password and TOTP; with `remember`, the response carries a device token."""
    start = await login_raw(api, user.email, password, **headers)
    assert start["status"] == "mfa_required", start
    r = await api.client.post(
        "/api/v1/auth/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": user.factor_id,
            "code": user.next_code(api),
            "remember_device": remember,
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def devices(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await api.client.get("/api/v1/me/devices", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["devices"])


async def stored_devices(api: Api, user_id: str) -> list[Any]:
    async with api.svc.engine.connect() as conn:
        stmt = select(remembered_devices).where(remembered_devices.c.user_id == user_id)
        return list(await conn.execute(stmt))


async def admin_headers(api: Api) -> tuple[str, dict[str, str]]:
    """A new administrator (made the way `cloudmfa create-admin` makes one), signed in with
    the second factor administration needs."""
    admin, headers = await admin_session(api)
    return admin.id, headers


# --- remembering a device -------------------------------------------------------------------


async def test_verify_with_remember_device_returns_a_device_token_stored_as_a_hash(
    api: Api,
) -> None:
    user = await mfa_user(api, "remember")

    body = await sign_in(api, user, remember=True)

    token = body["device_token"]
    assert isinstance(token, str) and len(token) >= 22  # at least 128 bits, base64url
    assert amr_of(body) == ["pwd", "otp", "mfa"]
    [row] = await stored_devices(api, user.id)
    assert row.token_hash == hash_opaque_token(token)
    assert token not in json.dumps([str(v) for v in row])


async def test_verify_without_remember_device_returns_no_device_token(api: Api) -> None:
    user = await mfa_user(api, "forget")
    body = await sign_in(api, user)
    assert "device_token" not in body
    assert await stored_devices(api, user.id) == []


async def test_device_token_skips_the_second_factor_with_swk_amr(api: Api) -> None:
    user = await mfa_user(api, "skip")
    device_token = (await sign_in(api, user, remember=True))["device_token"]

    body = await login_raw(api, user.email, device_token=device_token)

    assert body["status"] == "authenticated", body
    assert "mfa_token" not in body
    assert amr_of(body) == ["pwd", "swk", "mfa"]
    assert "acr" not in jwt.decode(body["access_token"], options={"verify_signature": False})
    me = await api.client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    # It keeps working until forgotten.
    again = await login_raw(api, user.email, device_token=device_token)
    assert again["status"] == "authenticated"


async def test_device_token_needs_the_right_password(api: Api) -> None:
    user = await mfa_user(api, "devpwd")
    device_token = (await sign_in(api, user, remember=True))["device_token"]
    r = await api.client.post(
        "/api/v1/auth/login",
        json={
            "email": user.email,
            "password": "not-the-password-at-all",
            "device_token": device_token,
        },
    )
    assert_problem(r, 401, "invalid_credentials")


async def test_remembered_device_session_fails_step_up(api: Api) -> None:
    user = await mfa_user(api, "devstep")
    device_token = (await sign_in(api, user, remember=True))["device_token"]
    body = await login_raw(api, user.email, device_token=device_token)
    headers = bearer(body["access_token"])

    assert_problem(
        await api.client.post("/api/v1/me/recovery-codes", headers=headers),
        403,
        "reauthentication_required",
    )
    r = await api.client.delete(f"/api/v1/me/factors/{user.factor_id}", headers=headers)
    assert_problem(r, 403, "reauthentication_required")
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert_problem(r, 403, "reauthentication_required")
    r = await api.client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert_problem(r, 403, "reauthentication_required")
    # Nothing was changed: the factor is still there and still asked for.
    assert (await login_raw(api, user.email))["status"] == "mfa_required"


async def test_device_token_of_another_user_is_ignored(api: Api) -> None:
    owner = await mfa_user(api, "owner")
    intruder = await mfa_user(api, "intruder")
    device_token = (await sign_in(api, owner, remember=True))["device_token"]

    body = await login_raw(api, intruder.email, device_token=device_token)

    assert body["status"] == "mfa_required"
    assert "access_token" not in body
    # The owner's device is unaffected.
    assert (await login_raw(api, owner.email, device_token=device_token))[
        "status"
    ] == "authenticated"


async def test_unknown_device_token_is_ignored(api: Api) -> None:
    user = await mfa_user(api, "unknowndev")
    body = await login_raw(api, user.email, device_token="x" * 43)
    assert body["status"] == "mfa_required"


async def test_device_token_expires_after_the_configured_days(api: Api) -> None:
    user = await mfa_user(api, "expiry")
    device_token = (await sign_in(api, user, remember=True))["device_token"]

    api.clock.advance(days=29, hours=23)
    assert (await login_raw(api, user.email, device_token=device_token))[
        "status"
    ] == "authenticated"
    api.clock.advance(hours=1, seconds=1)
    assert (await login_raw(api, user.email, device_token=device_token))["status"] == "mfa_required"


async def test_remember_device_days_zero_turns_the_feature_off(backend: dict[str, Any]) -> None:
    app, api = await start_api(make_settings(backend, remember_device_days=0))
    async with app.router.lifespan_context(app), api.client:
        user = await mfa_user(api, "off")
        body = await sign_in(api, user, remember=True)
        assert body["status"] == "authenticated"
        assert "device_token" not in body
        assert await stored_devices(api, user.id) == []
        assert (await login_raw(api, user.email))["status"] == "mfa_required"


# --- listing and forgetting devices ---------------------------------------------------------


async def test_devices_are_listed_with_their_metadata(api: Api) -> None:
    user = await mfa_user(api, "listdev")
    body = await sign_in(api, user, remember=True, **{"User-Agent": "laptop-browser/3.1"})
    remembered_at = api.clock.now()
    headers = bearer(body["access_token"])

    [device] = await devices(api, headers)

    assert set(device) == DEVICE_KEYS
    assert isinstance(device["id"], str) and device["id"]
    assert parse_utc(device["created_at"]) == remembered_at
    assert device["last_used_at"] is None
    assert device["user_agent"] == "laptop-browser/3.1"
    assert device["ip"] == "127.0.0.1"
    assert body["device_token"] not in json.dumps(device)

    api.clock.advance(minutes=5)
    used = await login_raw(api, user.email, device_token=body["device_token"])
    assert used["status"] == "authenticated"
    [device] = await devices(api, headers)
    assert parse_utc(device["last_used_at"]) == api.clock.now()


async def test_devices_list_only_the_callers_own(api: Api) -> None:
    first = await mfa_user(api, "mine")
    second = await mfa_user(api, "theirs")
    await sign_in(api, first, remember=True)
    await sign_in(api, first, remember=True)
    theirs = await sign_in(api, second, remember=True)

    listed = await devices(api, bearer(theirs["access_token"]))

    assert len(listed) == 1
    [row] = await stored_devices(api, second.id)
    assert listed[0]["id"] == row.id


async def test_forgetting_a_device_stops_it_skipping_the_second_factor(api: Api) -> None:
    user = await mfa_user(api, "forgetdev")
    kept = (await sign_in(api, user, remember=True))["device_token"]
    body = await sign_in(api, user, remember=True)
    forgotten = body["device_token"]
    headers = bearer(body["access_token"])
    listed = await devices(api, headers)
    assert len(listed) == 2
    [target] = [d for d in listed if d["id"] == (await _device_id(api, user.id, forgotten))]

    r = await api.client.delete(f"/api/v1/me/devices/{target['id']}", headers=headers)

    assert r.status_code == 204, r.text
    assert r.content == b""
    remaining = await devices(api, headers)
    assert len(remaining) == 1
    assert remaining[0]["id"] != target["id"]
    assert (await login_raw(api, user.email, device_token=forgotten))["status"] == "mfa_required"
    assert (await login_raw(api, user.email, device_token=kept))["status"] == "authenticated"
    r = await api.client.delete(f"/api/v1/me/devices/{target['id']}", headers=headers)
    assert_problem(r, 404, "not_found")


async def _device_id(api: Api, user_id: str, device_token: str) -> str:
    rows = await stored_devices(api, user_id)
    [row] = [r for r in rows if r.token_hash == hash_opaque_token(device_token)]
    return str(row.id)


async def test_forgetting_another_users_device_is_not_found(api: Api) -> None:
    owner = await mfa_user(api, "devowner")
    other = await mfa_user(api, "devother")
    device_token = (await sign_in(api, owner, remember=True))["device_token"]
    device_id = await _device_id(api, owner.id, device_token)
    other_headers = bearer((await sign_in(api, other))["access_token"])

    for path in (f"/api/v1/me/devices/{device_id}", "/api/v1/me/devices/not-a-uuid"):
        assert_problem(await api.client.delete(path, headers=other_headers), 404, "not_found")
    assert (await login_raw(api, owner.email, device_token=device_token))[
        "status"
    ] == "authenticated"


async def test_password_change_forgets_every_device(api: Api) -> None:
    user = await mfa_user(api, "pwchange")
    device_token = (await sign_in(api, user, remember=True))["device_token"]
    body = await sign_in(api, user, remember=True)
    headers = bearer(body["access_token"])

    r = await api.client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert r.status_code == 204, r.text
    assert await devices(api, headers) == []
    assert await stored_devices(api, user.id) == []
    for token in (device_token, body["device_token"]):
        after = await login_raw(api, user.email, NEW_PASSWORD, device_token=token)
        assert after["status"] == "mfa_required"


# --- removing a factor ----------------------------------------------------------------------


async def test_removing_the_only_factor_forgets_devices_and_makes_login_password_only(
    api: Api,
) -> None:
    user = await mfa_user(api, "remove")
    device_token = (await sign_in(api, user, remember=True))["device_token"]
    headers = bearer((await sign_in(api, user))["access_token"])

    r = await api.client.delete(f"/api/v1/me/factors/{user.factor_id}", headers=headers)

    assert r.status_code == 204, r.text
    assert r.content == b""
    factors = await api.client.get("/api/v1/me/factors", headers=headers)
    assert factors.json()["factors"] == []
    assert await stored_devices(api, user.id) == []
    async with api.svc.engine.connect() as conn:
        assert await code_repo.count_unused(conn, user.id) == 0  # no factor left to back up
    body = await login_raw(api, user.email, device_token=device_token)
    assert body["status"] == "authenticated"
    assert amr_of(body) == ["pwd"]
    events = await _events(api, user.id, "factor.removed")
    assert len(events) == 1
    assert events[0]["details"]["factor_id"] == user.factor_id
    assert events[0]["actor_id"] == user.id


async def test_removing_a_factor_needs_step_up(api: Api) -> None:
    user = await mfa_user(api, "removestep")
    tokens = await sign_in(api, user)
    api.clock.advance(minutes=11)
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert r.status_code == 200, r.text

    r = await api.client.delete(
        f"/api/v1/me/factors/{user.factor_id}", headers=bearer(r.json()["access_token"])
    )

    assert_problem(r, 403, "reauthentication_required")
    assert (await login_raw(api, user.email))["status"] == "mfa_required"


async def test_removing_an_unknown_or_foreign_factor_is_not_found(api: Api) -> None:
    owner = await mfa_user(api, "factorowner")
    other = await mfa_user(api, "factorother")
    headers = bearer((await sign_in(api, other))["access_token"])

    r = await api.client.delete(f"/api/v1/me/factors/{owner.factor_id}", headers=headers)
    assert_problem(r, 404, "not_found")
    r = await api.client.delete(
        "/api/v1/me/factors/00000000-0000-4000-8000-000000000000", headers=headers
    )
    assert_problem(r, 404, "not_found")
    assert (await login_raw(api, owner.email))["status"] == "mfa_required"


# --- the administrator's MFA reset ----------------------------------------------------------


async def _events(api: Api, user_id: str, type_: str) -> list[dict[str, Any]]:
    async with api.svc.engine.connect() as conn:
        return await list_events(conn, user_id=user_id, type_=type_, limit=100)


async def test_admin_mfa_reset_removes_factors_sessions_and_devices(api: Api) -> None:
    user = await mfa_user(api, "reset")
    remembered = await sign_in(api, user, remember=True)
    other_session = await sign_in(api, user)
    admin_id, admin = await admin_headers(api)

    r = await api.client.delete(f"/api/v1/admin/users/{user.id}/factors", headers=admin)

    assert r.status_code == 204, r.text
    assert r.content == b""
    for tokens in (remembered, other_session):
        me = await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
        assert_problem(me, 401, "invalid_token")
        r = await api.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_problem(r, 401, "invalid_token")
    assert await stored_devices(api, user.id) == []
    detail = await api.client.get(f"/api/v1/admin/users/{user.id}", headers=admin)
    assert detail.status_code == 200, detail.text
    assert detail.json()["factors"] == []

    body = await login_raw(api, user.email, device_token=remembered["device_token"])
    assert body["status"] == "authenticated"
    assert amr_of(body) == ["pwd"]
    assert (await api.client.get("/api/v1/me", headers=bearer(body["access_token"]))).json()[
        "mfa_enabled"
    ] is False

    [event] = await _events(api, user.id, "mfa.reset")
    assert event["actor_id"] == admin_id
    assert event["subject_id"] == user.id
    assert event["outcome"] == "success"
    assert event["details"]["factors_removed"] == 1
    assert event["details"]["devices_forgotten"] == 1
    assert event["details"]["sessions_revoked"] >= 2
    trail = json.dumps(event, default=str)
    assert user.secret not in trail and remembered["device_token"] not in trail


async def test_admin_mfa_reset_of_an_unknown_user_is_not_found(api: Api) -> None:
    _, admin = await admin_headers(api)
    r = await api.client.delete(
        "/api/v1/admin/users/00000000-0000-4000-8000-000000000000/factors", headers=admin
    )
    assert_problem(r, 404, "not_found")


async def test_mfa_reset_by_a_non_admin_is_forbidden(api: Api) -> None:
    user = await mfa_user(api, "resettarget")
    _, plain = await api.signed_in("plain")
    r = await api.client.delete(f"/api/v1/admin/users/{user.id}/factors", headers=plain)
    assert_problem(r, 403, "forbidden")
    assert (await login_raw(api, user.email))["status"] == "mfa_required"
    assert await _events(api, user.id, "mfa.reset") == []


async def test_after_an_mfa_reset_the_user_can_enrol_again(api: Api) -> None:
    user = await mfa_user(api, "reenrol")
    _, admin = await admin_headers(api)
    assert (
        await api.client.delete(f"/api/v1/admin/users/{user.id}/factors", headers=admin)
    ).status_code == 204
    headers = bearer((await api.login(user.email))["access_token"])

    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    r = await api.client.post(
        f"/api/v1/me/factors/{r.json()['id']}/activate",
        json={"code": pyotp.TOTP(secret).at(api.clock.now() + timedelta(seconds=30))},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["recovery_codes"]) == 10  # a first factor again
    assert not set(r.json()["recovery_codes"]) & set(user.recovery_codes)

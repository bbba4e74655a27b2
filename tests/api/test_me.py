"""/api/v1/me: the signed-in user, their sessions, password and history
(API.md "The signed-in user and their factors", "Audit events")."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx

from cloudmfa.store import audit as audit_repo
from conftest import ALL_BACKENDS, PASSWORD, Api, bearer
from support import AUDIT_EVENT_KEYS, assert_problem

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

NEW_PASSWORD = "saffron-glacier-lantern-97"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")


def parse_utc(value: str) -> datetime:
    assert RFC3339_UTC.match(value), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    return parsed


async def login_raw(
    api: Api, email: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}, headers=headers
    )


async def all_own_events(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await api.client.get("/api/v1/me/events", params={"limit": 200}, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


# GET /api/v1/me


async def test_me_returns_the_callers_profile(api: Api) -> None:
    signed_up_at = api.clock.now()
    email = api.new_email("me")
    account = await api.sign_up(email, display_name="Ada Lovelace")
    tokens = await api.login(email)

    r = await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))

    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert {"id", "email", "display_name", "created_at", "mfa_enabled", "roles"} <= set(body)
    assert body["id"] == account["id"]
    assert body["email"] == email
    assert body["display_name"] == "Ada Lovelace"
    assert parse_utc(body["created_at"]) == signed_up_at
    assert body["mfa_enabled"] is False
    assert body["roles"] == []
    assert "password_hash" not in json.dumps(body)


async def test_me_display_name_is_null_when_not_given(api: Api) -> None:
    user, headers = await api.signed_in("noname")

    r = await api.client.get("/api/v1/me", headers=headers)

    assert r.status_code == 200
    assert r.json()["display_name"] is None
    assert r.json()["id"] == user["id"]


async def test_me_without_a_token_is_invalid_token(api: Api) -> None:
    assert_problem(await api.client.get("/api/v1/me"), 401, "invalid_token")
    r = await api.client.get("/api/v1/me", headers=bearer("not-a-jwt"))
    assert_problem(r, 401, "invalid_token")


# GET/DELETE /api/v1/me/sessions


async def test_sessions_lists_live_sessions_with_exactly_one_current(api: Api) -> None:
    account = await api.sign_up()
    first = await login_raw(api, account["email"], **{"User-Agent": "first-browser/1.0"})
    second = await login_raw(api, account["email"], **{"User-Agent": "second-browser/2.0"})
    assert first.status_code == second.status_code == 200
    first_sid, second_sid = first.json()["session_id"], second.json()["session_id"]

    r = await api.client.get("/api/v1/me/sessions", headers=bearer(second.json()["access_token"]))

    assert r.status_code == 200, r.text
    sessions = r.json()["sessions"]
    assert {s["id"] for s in sessions} == {first_sid, second_sid}
    assert len(sessions) == 2
    for s in sessions:
        assert {"id", "created_at", "last_seen_at", "ip", "user_agent", "current"} <= set(s)
        parse_utc(s["created_at"])
        parse_utc(s["last_seen_at"])
        assert s["ip"] == "127.0.0.1"
    current = [s for s in sessions if s["current"] is True]
    assert len(current) == 1
    assert current[0]["id"] == second_sid
    assert current[0]["user_agent"] == "second-browser/2.0"
    other = next(s for s in sessions if s["id"] == first_sid)
    assert other["current"] is False
    assert other["user_agent"] == "first-browser/1.0"


async def test_sessions_never_lists_another_users_sessions(api: Api) -> None:
    stranger, _ = await api.signed_in("stranger")
    me, headers = await api.signed_in("owner")

    r = await api.client.get("/api/v1/me/sessions", headers=headers)

    assert r.status_code == 200
    ids = [s["id"] for s in r.json()["sessions"]]
    assert ids == [me["session_id"]]
    assert stranger["session_id"] not in ids


async def test_sessions_omits_ended_sessions(api: Api) -> None:
    user, headers = await api.signed_in("ended")
    other = await api.login(user["email"])
    r = await api.client.post("/api/v1/auth/logout", headers=bearer(other["access_token"]))
    assert r.status_code == 204

    r = await api.client.get("/api/v1/me/sessions", headers=headers)

    assert [s["id"] for s in r.json()["sessions"]] == [user["session_id"]]


async def test_revoking_own_other_session_ends_it(api: Api) -> None:
    user, headers = await api.signed_in("revoker")
    other = await api.login(user["email"])
    assert (
        await api.client.get("/api/v1/me", headers=bearer(other["access_token"]))
    ).status_code == 200

    r = await api.client.delete(f"/api/v1/me/sessions/{other['session_id']}", headers=headers)

    assert r.status_code == 204
    assert r.content == b""
    r = await api.client.get("/api/v1/me", headers=bearer(other["access_token"]))
    assert_problem(r, 401, "invalid_token")
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert_problem(r, 401, "invalid_token")
    # The caller's own session is untouched and no longer lists the revoked one.
    r = await api.client.get("/api/v1/me/sessions", headers=headers)
    assert r.status_code == 200
    assert [s["id"] for s in r.json()["sessions"]] == [user["session_id"]]
    events = await all_own_events(api, headers)
    revoked = [e for e in events if e["type"] == "session.revoked"]
    assert len(revoked) == 1
    assert revoked[0]["details"]["session_id"] == other["session_id"]


async def test_revoking_another_users_session_is_not_found(api: Api) -> None:
    victim, victim_headers = await api.signed_in("victim")
    _, attacker_headers = await api.signed_in("attacker")

    r = await api.client.delete(
        f"/api/v1/me/sessions/{victim['session_id']}", headers=attacker_headers
    )

    assert_problem(r, 404, "not_found")
    r = await api.client.get("/api/v1/me", headers=victim_headers)
    assert r.status_code == 200
    assert r.json()["id"] == victim["id"]
    r = await api.client.get("/api/v1/me/sessions", headers=victim_headers)
    assert [s["id"] for s in r.json()["sessions"]] == [victim["session_id"]]
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}
    )
    assert r.status_code == 200, r.text


async def test_revoking_a_malformed_or_unknown_session_id_is_not_found(api: Api) -> None:
    _, headers = await api.signed_in("malformed")

    for bad in ("not-a-session", "123", str(uuid.uuid4()), "%00", "x" * 300):
        r = await api.client.delete(f"/api/v1/me/sessions/{bad}", headers=headers)
        assert_problem(r, 404, "not_found")
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 200


# POST /api/v1/me/password


async def test_password_change_with_wrong_current_password_is_invalid_credentials(api: Api) -> None:
    user, headers = await api.signed_in("wrongcur")

    r = await api.client.post(
        "/api/v1/me/password",
        json={"current_password": "not-the-password-at-all", "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert_problem(r, 401, "invalid_credentials")
    await api.login(user["email"], PASSWORD)  # unchanged
    r = await login_raw(api, user["email"], NEW_PASSWORD)
    assert_problem(r, 401, "invalid_credentials")


async def test_password_change_to_a_weak_password_is_weak_password(api: Api) -> None:
    user, headers = await api.signed_in("weaknew")
    local_part = user["email"].split("@")[0]

    for weak in ("short-pw", f"{local_part}-is-my-long-password"):
        r = await api.client.post(
            "/api/v1/me/password",
            json={"current_password": PASSWORD, "new_password": weak},
            headers=headers,
        )
        body = assert_problem(r, 422, "weak_password")
        assert weak not in json.dumps(body)
    await api.login(user["email"], PASSWORD)


async def test_password_change_revokes_other_sessions_and_keeps_this_one(api: Api) -> None:
    user, headers = await api.signed_in("changer")
    other = await api.login(user["email"])

    r = await api.client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert r.status_code == 204, r.text
    assert r.content == b""
    r = await api.client.get("/api/v1/me", headers=bearer(other["access_token"]))
    assert_problem(r, 401, "invalid_token")
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert_problem(r, 401, "invalid_token")
    r = await api.client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200
    r = await api.client.get("/api/v1/me/sessions", headers=headers)
    assert [s["id"] for s in r.json()["sessions"]] == [user["session_id"]]
    r = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert r.status_code == 200, r.text

    await api.login(user["email"], NEW_PASSWORD)
    r = await login_raw(api, user["email"], PASSWORD)
    assert_problem(r, 401, "invalid_credentials")

    events = await all_own_events(api, headers)
    changed = [e for e in events if e["type"] == "password.changed"]
    assert len(changed) == 1
    assert changed[0]["actor_id"] == user["id"]
    assert changed[0]["subject_id"] == user["id"]
    assert changed[0]["outcome"] == "success"


async def test_password_change_needs_a_recent_sign_in(api: Api) -> None:
    user, _ = await api.signed_in("stepup")
    # Keep the session alive with refreshes (they keep auth_time) until the 10-minute
    # re-authentication window has passed.
    api.clock.advance(minutes=6)
    r = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert r.status_code == 200, r.text
    api.clock.advance(minutes=5)
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": r.json()["refresh_token"]}
    )
    assert r.status_code == 200, r.text
    headers = bearer(r.json()["access_token"])
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 200

    r = await api.client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert_problem(r, 403, "reauthentication_required")
    await api.login(user["email"], PASSWORD)  # unchanged
    # A fresh sign-in satisfies step-up.
    fresh = await api.login(user["email"], PASSWORD)
    r = await api.client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(fresh["access_token"]),
    )
    assert r.status_code == 204, r.text


# GET /api/v1/me/events


async def test_events_are_the_users_own_newest_first(api: Api) -> None:
    account = await api.sign_up(api.new_email("history"))
    api.clock.advance(seconds=1)
    stranger, _ = await api.signed_in("bystander")
    api.clock.advance(seconds=1)
    tokens = await api.login(account["email"])
    headers = bearer(tokens["access_token"])
    api.clock.advance(seconds=1)
    r = await login_raw(api, account["email"], "definitely-wrong-password")
    assert r.status_code == 401

    r = await api.client.get("/api/v1/me/events", headers=headers)

    assert r.status_code == 200, r.text
    body = r.json()
    assert "next_cursor" in body
    events = body["events"]
    types = [e["type"] for e in events]
    assert types == ["login.failed", "login.succeeded", "account.created"]
    for e in events:
        assert AUDIT_EVENT_KEYS <= set(e)
        assert account["id"] in (e["actor_id"], e["subject_id"])
        assert stranger["id"] not in (e["actor_id"], e["subject_id"])
    times = [parse_utc(e["at"]) for e in events]
    assert times == sorted(times, reverse=True)
    assert times[0] > times[-1]
    assert events[0]["outcome"] == "failure"
    assert events[1]["details"]["session_id"] == tokens["session_id"]
    assert events[1]["ip"] == "127.0.0.1"


async def test_events_pages_with_limit_and_cursor_without_overlap(api: Api) -> None:
    user, headers = await api.signed_in("pager")
    for _ in range(4):
        await api.login(user["email"])
    await login_raw(api, user["email"], "wrong-password-here")
    everything = await all_own_events(api, headers)
    assert len(everything) >= 7

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await api.client.get("/api/v1/me/events", params=params, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["events"]) <= 2
        seen.extend(e["id"] for e in page["events"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    else:
        raise AssertionError("pagination did not end")

    assert len(seen) == len(set(seen))
    assert seen == [e["id"] for e in everything]


async def test_events_reject_a_malformed_cursor_or_limit(api: Api) -> None:
    _, headers = await api.signed_in("badcursor")
    for params in ({"cursor": "!!not-base64!!"}, {"limit": 0}, {"limit": 10_000}, {"limit": "x"}):
        r = await api.client.get("/api/v1/me/events", params=params, headers=headers)
        assert_problem(r, 422, "validation_error")


async def test_events_reject_a_forged_cursor_out_of_range(api: Api) -> None:
    _, headers = await api.signed_in("forged")
    for value in (10**30, -(10**30), 2**63, "12", None):
        cursor = base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
        r = await api.client.get("/api/v1/me/events", params={"cursor": cursor}, headers=headers)
        assert_problem(r, 422, "validation_error")


async def test_no_event_contains_a_password_or_a_token(api: Api) -> None:
    wrong = "wrong-guess-velvet-99"
    weak = "tiny-pw"
    user, headers = await api.signed_in("secrets")
    secrets_seen: list[str] = [PASSWORD, NEW_PASSWORD, wrong, weak]
    secrets_seen += [user["access_token"], user["refresh_token"]]
    await login_raw(api, user["email"], wrong)
    await login_raw(api, "nobody-" + user["email"], wrong)
    other = await api.login(user["email"])
    secrets_seen += [other["access_token"], other["refresh_token"]]
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    secrets_seen += [r.json()["access_token"], r.json()["refresh_token"]]
    # Reuse of a spent refresh token (theft detection) records an event too.
    await api.client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    for current, new in ((wrong, NEW_PASSWORD), (PASSWORD, weak), (PASSWORD, NEW_PASSWORD)):
        await api.client.post(
            "/api/v1/me/password",
            json={"current_password": current, "new_password": new},
            headers=headers,
        )
    third = await api.login(user["email"], NEW_PASSWORD)
    secrets_seen += [third["access_token"], third["refresh_token"]]
    await api.client.post("/api/v1/auth/logout", headers=bearer(third["access_token"]))

    async with api.svc.engine.connect() as conn:
        rows = await audit_repo.list_events(conn, limit=1_000_000)
    own_types = {row["type"] for row in rows if user["id"] in (row["actor_id"], row["subject_id"])}
    assert {
        "login.failed",
        "login.succeeded",
        "password.changed",
        "token.reuse_detected",
        "session.revoked",
    } <= own_types
    dump = json.dumps(rows, default=str)
    for secret in secrets_seen:
        assert secret not in dump
    # Nor any piece of a JWT (its signature or claims segment).
    for token in (user["access_token"], other["access_token"], third["access_token"]):
        for segment in token.split(".")[1:]:
            assert segment not in dump

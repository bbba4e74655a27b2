"""/api/v1/admin: users and the audit trail, for the admin role (API.md "Administration",
"Audit events")."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from conftest import ALL_BACKENDS, PASSWORD, Api, bearer
from support import AUDIT_EVENT_KEYS, assert_problem
from support import admin_session as signed_in_admin

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)


async def admin_session(api: Api, tag: str = "admin") -> tuple[dict[str, Any], dict[str, str]]:
    """A new administrator with a second factor, in a fresh session that verified it."""
    admin, headers = await signed_in_admin(api, tag)
    return {"id": admin.id, "email": admin.email}, headers


def admin_endpoints(user_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", "/api/v1/admin/users"),
        ("GET", f"/api/v1/admin/users/{user_id}"),
        ("POST", f"/api/v1/admin/users/{user_id}/lock"),
        ("POST", f"/api/v1/admin/users/{user_id}/unlock"),
        ("DELETE", f"/api/v1/admin/users/{user_id}/factors"),
        ("GET", "/api/v1/admin/audit"),
    ]


async def walk_pages(
    api: Api, path: str, key: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await api.client.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) >= {key, "next_cursor"}
        assert len(page[key]) <= params.get("limit", 50)
        items.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


# Who may call


async def test_admin_endpoints_refuse_a_non_admin_with_forbidden(api: Api) -> None:
    target, target_headers = await api.signed_in("target")
    _, headers = await api.signed_in("plain")

    for method, path in admin_endpoints(target["id"]):
        r = await api.client.request(method, path, headers=headers)
        assert_problem(r, 403, "forbidden")
    # Nothing happened to the target: their session still works and they can sign in.
    assert (await api.client.get("/api/v1/me", headers=target_headers)).status_code == 200
    await api.login(target["email"])


async def test_admin_endpoints_without_a_token_are_invalid_token(api: Api) -> None:
    target, _ = await api.signed_in("notoken")

    for method, path in admin_endpoints(target["id"]):
        r = await api.client.request(method, path)
        assert_problem(r, 401, "invalid_token")
        r = await api.client.request(method, path, headers=bearer("garbage.token.value"))
        assert_problem(r, 401, "invalid_token")


async def test_admin_role_shows_in_me(api: Api) -> None:
    admin, headers = await admin_session(api)

    r = await api.client.get("/api/v1/me", headers=headers)

    assert r.status_code == 200
    assert r.json()["roles"] == ["admin"]
    assert r.json()["id"] == admin["id"]


# Users


async def test_users_query_matches_an_email_substring_case_insensitively(api: Api) -> None:
    _, headers = await admin_session(api)
    tag = uuid.uuid4().hex[:8]
    matching = {(await api.sign_up(f"q{i}-{tag}-x@example.com"))["email"] for i in range(3)}
    await api.sign_up(api.new_email("unrelated"))

    r = await api.client.get(
        "/api/v1/admin/users", params={"query": f"-{tag.upper()}-X@EXAMPLE"}, headers=headers
    )

    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"users", "next_cursor"}
    assert {u["email"] for u in body["users"]} == matching
    assert len(body["users"]) == 3
    for u in body["users"]:
        assert {"id", "email"} <= set(u)
        assert "password_hash" not in u
    r = await api.client.get(
        "/api/v1/admin/users", params={"query": f"no-such-{tag}"}, headers=headers
    )
    assert r.status_code == 200
    assert r.json()["users"] == []


async def test_users_query_treats_wildcards_literally(api: Api) -> None:
    _, headers = await admin_session(api)

    for query in ("%", "_"):
        r = await api.client.get("/api/v1/admin/users", params={"query": query}, headers=headers)
        assert r.status_code == 200
        assert all(query in u["email"] for u in r.json()["users"])


async def test_users_pages_with_a_cursor_visiting_each_match_once(api: Api) -> None:
    _, headers = await admin_session(api)
    tag = uuid.uuid4().hex[:8]
    created = {(await api.sign_up(f"page{i}-{tag}@example.com"))["id"] for i in range(5)}

    users = await walk_pages(api, "/api/v1/admin/users", "users", headers, query=tag, limit=2)

    ids = [u["id"] for u in users]
    assert len(ids) == len(set(ids))
    assert set(ids) == created


async def test_users_list_without_query_includes_everyone(api: Api) -> None:
    admin, headers = await admin_session(api)
    user, _ = await api.signed_in("everyone")

    users = await walk_pages(api, "/api/v1/admin/users", "users", headers, limit=200)

    ids = [u["id"] for u in users]
    assert len(ids) == len(set(ids))
    assert {admin["id"], user["id"]} <= set(ids)


async def test_users_list_rejects_a_bad_limit_or_cursor(api: Api) -> None:
    _, headers = await admin_session(api)
    for params in ({"limit": 0}, {"limit": 100_000}, {"cursor": "%%%"}):
        r = await api.client.get("/api/v1/admin/users", params=params, headers=headers)
        assert_problem(r, 422, "validation_error")


async def test_user_detail_has_profile_and_factor_list(api: Api) -> None:
    _, headers = await admin_session(api)
    user = await api.sign_up(api.new_email("detail"), display_name="Grace Hopper")

    r = await api.client.get(f"/api/v1/admin/users/{user['id']}", headers=headers)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == user["id"]
    assert body["email"] == user["email"]
    assert body["display_name"] == "Grace Hopper"
    assert body["roles"] == []
    assert body["factors"] == []
    assert body["mfa_enabled"] is False
    assert body["locked"] is False
    dump = json.dumps(body)
    assert "password" not in dump
    assert "argon2" not in dump


@pytest.mark.parametrize(
    "user_id", ["6f1c2a4e-8b7d-4c3a-9e5f-0a1b2c3d4e5f", "not-a-uuid", "1", "x" * 200]
)
async def test_user_detail_of_an_unknown_or_malformed_id_is_not_found(
    api: Api, user_id: str
) -> None:
    _, headers = await admin_session(api)

    r = await api.client.get(f"/api/v1/admin/users/{user_id}", headers=headers)
    assert_problem(r, 404, "not_found")
    r = await api.client.post(f"/api/v1/admin/users/{user_id}/lock", headers=headers)
    assert_problem(r, 404, "not_found")
    r = await api.client.post(f"/api/v1/admin/users/{user_id}/unlock", headers=headers)
    assert_problem(r, 404, "not_found")
    r = await api.client.delete(f"/api/v1/admin/users/{user_id}/factors", headers=headers)
    assert_problem(r, 404, "not_found")


# Locking


async def test_locking_revokes_sessions_and_refuses_login(api: Api) -> None:
    admin, headers = await admin_session(api)
    user, _ = await api.signed_in("lockme")
    second = await api.login(user["email"])

    r = await api.client.post(f"/api/v1/admin/users/{user['id']}/lock", headers=headers)

    assert r.status_code == 204, r.text
    assert r.content == b""
    for tokens in (user, second):
        r = await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
        assert_problem(r, 401, "invalid_token")
        r = await api.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_problem(r, 401, "invalid_token")
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD}
    )
    assert_problem(r, 403, "account_locked")
    r = await api.client.get(f"/api/v1/admin/users/{user['id']}", headers=headers)
    assert r.json()["locked"] is True
    # Locking twice is harmless.
    r = await api.client.post(f"/api/v1/admin/users/{user['id']}/lock", headers=headers)
    assert r.status_code == 204
    assert (await api.client.get("/api/v1/me", headers=headers)).json()["id"] == admin["id"]


async def test_unlocking_lets_the_user_sign_in_again(api: Api) -> None:
    _, headers = await admin_session(api)
    user, _ = await api.signed_in("unlockme")
    assert (
        await api.client.post(f"/api/v1/admin/users/{user['id']}/lock", headers=headers)
    ).status_code == 204

    r = await api.client.post(f"/api/v1/admin/users/{user['id']}/unlock", headers=headers)

    assert r.status_code == 204, r.text
    tokens = await api.login(user["email"])
    assert (
        await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 200
    # The sessions ended by the lock stay ended.
    r = await api.client.get("/api/v1/me", headers=bearer(user["access_token"]))
    assert_problem(r, 401, "invalid_token")
    r = await api.client.get(f"/api/v1/admin/users/{user['id']}", headers=headers)
    assert r.json()["locked"] is False


async def test_lock_and_unlock_are_audited_with_admin_as_actor(api: Api) -> None:
    admin, headers = await admin_session(api)
    user, _ = await api.signed_in("audited")
    agent = {"User-Agent": "admin-console/7.1"}
    await api.client.post(f"/api/v1/admin/users/{user['id']}/lock", headers={**headers, **agent})
    await api.client.post(f"/api/v1/admin/users/{user['id']}/unlock", headers={**headers, **agent})

    for kind in ("account.locked", "account.unlocked"):
        r = await api.client.get(
            "/api/v1/admin/audit", params={"user_id": user["id"], "type": kind}, headers=headers
        )
        assert r.status_code == 200, r.text
        events = r.json()["events"]
        assert len(events) == 1
        event = events[0]
        assert event["type"] == kind
        assert event["actor_id"] == admin["id"]
        assert event["subject_id"] == user["id"]
        assert event["outcome"] == "success"
        assert event["ip"] == "127.0.0.1"
        assert event["user_agent"] == "admin-console/7.1"
    # The admin's own trail holds what they did.
    r = await api.client.get(
        "/api/v1/admin/audit", params={"user_id": admin["id"]}, headers=headers
    )
    types = [e["type"] for e in r.json()["events"]]
    assert types[:2] == ["account.unlocked", "account.locked"]
    assert "login.succeeded" in types


# The audit trail


async def test_audit_user_id_filter_matches_actor_or_subject(api: Api) -> None:
    admin, headers = await admin_session(api)
    user, _ = await api.signed_in("filtered")
    bystander, _ = await api.signed_in("bystander")
    await api.client.post(f"/api/v1/admin/users/{user['id']}/lock", headers=headers)

    r = await api.client.get(
        "/api/v1/admin/audit", params={"user_id": user["id"], "limit": 200}, headers=headers
    )

    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert [e["type"] for e in events] == ["account.locked", "login.succeeded", "account.created"]
    for e in events:
        assert AUDIT_EVENT_KEYS <= set(e)
        assert user["id"] in (e["actor_id"], e["subject_id"])
        assert bystander["id"] not in (e["actor_id"], e["subject_id"])
    assert events[0]["actor_id"] == admin["id"]  # matched as subject
    assert events[1]["actor_id"] == user["id"]  # matched as actor


async def test_audit_type_filter(api: Api) -> None:
    _, headers = await admin_session(api)
    user, _ = await api.signed_in("typed")
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "wrong-password-x"}
    )
    assert r.status_code == 401

    r = await api.client.get(
        "/api/v1/admin/audit", params={"type": "login.failed", "limit": 200}, headers=headers
    )

    assert r.status_code == 200
    events = r.json()["events"]
    assert events
    assert {e["type"] for e in events} == {"login.failed"}
    assert any(e["subject_id"] == user["id"] for e in events)
    r = await api.client.get(
        "/api/v1/admin/audit",
        params={"type": "login.failed", "user_id": user["id"]},
        headers=headers,
    )
    assert [(e["type"], e["subject_id"]) for e in r.json()["events"]] == [
        ("login.failed", user["id"])
    ]
    r = await api.client.get(
        "/api/v1/admin/audit", params={"type": "no.such.type"}, headers=headers
    )
    assert r.json() == {"events": [], "next_cursor": None}


async def test_audit_pages_with_a_cursor_newest_first_without_overlap(api: Api) -> None:
    _, headers = await admin_session(api)
    user, _ = await api.signed_in("auditpager")
    for _ in range(4):
        await api.login(user["email"])
    r = await api.client.get(
        "/api/v1/admin/audit", params={"user_id": user["id"], "limit": 200}, headers=headers
    )
    everything = [e["id"] for e in r.json()["events"]]
    assert len(everything) == 6

    events = await walk_pages(
        api, "/api/v1/admin/audit", "events", headers, user_id=user["id"], limit=2
    )

    ids = [e["id"] for e in events]
    assert ids == everything
    assert len(set(ids)) == len(ids)
    # Without a filter the whole trail pages the same way.
    whole = await walk_pages(api, "/api/v1/admin/audit", "events", headers, limit=7)
    whole_ids = [e["id"] for e in whole]
    assert len(whole_ids) == len(set(whole_ids))
    assert set(everything) <= set(whole_ids)


def forged_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/api/v1/admin/users", forged_cursor("a\u0000b")),
        ("/api/v1/admin/users", forged_cursor("a\ud800b")),
        ("/api/v1/admin/users", forged_cursor(7)),
        ("/api/v1/admin/audit", forged_cursor(2**63)),
        ("/api/v1/admin/audit", forged_cursor(-(2**70))),
        ("/api/v1/admin/audit", forged_cursor("12")),
        ("/api/v1/admin/audit", forged_cursor(1.5)),
    ],
)
async def test_forged_cursors_are_validation_error_not_500(
    api: Api, path: str, cursor: str
) -> None:
    _, headers = await admin_session(api)

    r = await api.client.get(path, params={"cursor": cursor}, headers=headers)

    assert_problem(r, 422, "validation_error")


async def test_audit_rejects_a_bad_cursor(api: Api) -> None:
    _, headers = await admin_session(api)
    r = await api.client.get(
        "/api/v1/admin/audit", params={"cursor": "bm90LWFuLWludA"}, headers=headers
    )
    assert_problem(r, 422, "validation_error")


async def test_an_admin_cannot_lock_their_own_account(api: Api) -> None:
    admin, headers = await admin_session(api)
    r = await api.client.post(f"/api/v1/admin/users/{admin['id']}/lock", headers=headers)
    assert_problem(r, 403, "forbidden")
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 200

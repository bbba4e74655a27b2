"""A forgotten password (API.md "Forgotten password") over HTTP on both backends: the link is
read from the delivered email."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest_asyncio

import conftest
from cloudmfa.store import users as user_repo
from conftest import PASSWORD, Api, bearer
from recording import RecordingOutbox, events_of, recording_api
from support import MfaUser, assert_authenticated, assert_problem, mfa_sign_in, mfa_user

NEW_PASSWORD = "saffron-glacier-lantern-97"
PUBLIC_URL = "https://id.example.com"


@pytest_asyncio.fixture(scope="module")
async def rig(backend: dict[str, Any]) -> AsyncIterator[tuple[Api, RecordingOutbox]]:
    settings = conftest.test_settings(backend, public_url=PUBLIC_URL)
    async with recording_api(settings) as given:
        yield given


@pytest_asyncio.fixture
async def api(rig: tuple[Api, RecordingOutbox]) -> Api:
    return rig[0]


@pytest_asyncio.fixture
async def outbox(rig: tuple[Api, RecordingOutbox]) -> RecordingOutbox:
    return rig[1]


async def ask(api: Api, email: str) -> httpx.Response:
    return await api.client.post("/api/v1/auth/password-reset", json={"email": email})


async def confirm(api: Api, token: str, password: str = NEW_PASSWORD) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": password}
    )


def token_in(outbox: RecordingOutbox, email: str) -> str:
    """The token of the last reset link sent to ``email``."""
    message = outbox.last_to(email)
    match = re.search(r"(\S+/reset-password\?token=\S+)", message.text)
    assert match, message.text
    link = urlsplit(match.group(1))
    assert f"{link.scheme}://{link.netloc}" == PUBLIC_URL
    [token] = parse_qs(link.query)["token"]
    assert link.geturl() in (message.html or "")
    return token


async def reset_link(api: Api, outbox: RecordingOutbox, email: str) -> str:
    r = await ask(api, email)
    assert r.status_code == 202, r.text
    return token_in(outbox, email)


async def test_the_answer_is_the_same_whether_or_not_the_account_exists(
    api: Api, outbox: RecordingOutbox
) -> None:
    account = await api.sign_up()
    unknown = api.new_email("nobody")
    before = len(outbox.sent)

    known_answer, unknown_answer = await ask(api, account["email"]), await ask(api, unknown)

    for r in (known_answer, unknown_answer):
        assert r.status_code == 202
        assert r.json() == {}
    assert known_answer.content == unknown_answer.content
    assert set(known_answer.headers) == set(unknown_answer.headers)
    [sent] = outbox.sent[before:]  # only the account's owner gets a link
    assert sent.to == account["email"] and sent.channel == "email"
    assert "30 minutes" in sent.text
    # Both requests left an audit trace; the unknown address is not named in it.
    [missed] = [e for e in await events_of(api, None, "password_reset.requested")][:1]
    assert missed["details"]["reason"] == "unknown_account" and unknown not in str(missed)


async def test_a_reset_sets_the_password_ends_every_session_and_keeps_the_second_factor(
    api: Api, outbox: RecordingOutbox
) -> None:
    user: MfaUser = await mfa_user(api, "reset")
    remembered = await mfa_sign_in(api, user, remember=True)
    token = await reset_link(api, outbox, user.email)

    r = await confirm(api, token)

    assert r.status_code == 204, r.text
    # Every session ended: its access and refresh tokens are refused.
    me = await api.client.get("/api/v1/me", headers=bearer(remembered["access_token"]))
    assert_problem(me, 401, "invalid_token")
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": remembered["refresh_token"]}
    )
    assert_problem(r, 401, "invalid_token")
    # The old password no longer works; the new one still leads to the second factor, and the
    # remembered device was forgotten.
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert_problem(r, 401, "invalid_credentials")
    start = await api.login(user.email, NEW_PASSWORD, device_token=remembered["device_token"])
    assert start["status"] == "mfa_required"
    # The account was told.
    assert outbox.last_to(user.email).subject == "cloudmfa: Your password was reset"
    assert token not in outbox.last_to(user.email).text
    [event] = await events_of(api, user.id, "password.reset")
    assert event["details"]["sessions_revoked"] >= 2 and event["details"]["devices_forgotten"] == 1


async def test_a_token_works_once(api: Api, outbox: RecordingOutbox) -> None:
    account = await api.sign_up()
    token = await reset_link(api, outbox, account["email"])
    assert (await confirm(api, token)).status_code == 204

    assert_problem(await confirm(api, token, "another-long-password-77"), 401, "invalid_token")


async def test_two_confirmations_at_once_use_the_token_once(
    api: Api, outbox: RecordingOutbox
) -> None:
    account = await api.sign_up()
    token = await reset_link(api, outbox, account["email"])

    answers = await asyncio.gather(
        confirm(api, token, "first-racing-password-11"),
        confirm(api, token, "second-racing-password-22"),
    )

    assert sorted(r.status_code for r in answers) == [204, 401]
    winner = (
        "first-racing-password-11" if answers[0].status_code == 204 else "second-racing-password-22"
    )
    assert_authenticated(
        await api.client.post(
            "/api/v1/auth/login", json={"email": account["email"], "password": winner}
        )
    )


async def test_a_token_expires_after_thirty_minutes(api: Api, outbox: RecordingOutbox) -> None:
    account = await api.sign_up()
    token = await reset_link(api, outbox, account["email"])
    api.clock.advance(seconds=1800)

    assert_problem(await confirm(api, token), 401, "invalid_token")


async def test_a_weak_password_is_refused_and_the_link_still_works(
    api: Api, outbox: RecordingOutbox
) -> None:
    account = await api.sign_up()
    token = await reset_link(api, outbox, account["email"])

    assert_problem(await confirm(api, token, "short"), 422, "weak_password")
    assert_problem(await confirm(api, token, f"x{account['email']}-x"), 422, "weak_password")
    assert (await confirm(api, token)).status_code == 204


async def test_links_sent_before_a_password_change_are_dead(
    api: Api, outbox: RecordingOutbox
) -> None:
    account = await api.sign_up()
    older = await reset_link(api, outbox, account["email"])
    newer = await reset_link(api, outbox, account["email"])
    assert older != newer
    assert (await confirm(api, newer)).status_code == 204

    assert_problem(await confirm(api, older, "yet-another-password-33"), 401, "invalid_token")


async def test_tokens_that_were_never_issued_are_refused(api: Api) -> None:
    for token in ("x", "A" * 43, "../../etc/passwd"):
        assert_problem(await confirm(api, token), 401, "invalid_token")
    r = await api.client.post("/api/v1/auth/password-reset/confirm", json={"token": "x"})
    assert_problem(r, 422, "validation_error")


async def test_reset_emails_count_against_the_destination_limit(
    api: Api, outbox: RecordingOutbox
) -> None:
    account = await api.sign_up()
    for _ in range(10):
        assert (await ask(api, account["email"])).status_code == 202
    assert len(outbox.to(account["email"])) == 10

    r = await ask(api, account["email"])

    assert r.status_code == 202 and r.json() == {}  # a 429 would say the account exists
    assert len(outbox.to(account["email"])) == 10
    [event] = await events_of(api, account["id"], "rate_limited")
    assert event["details"]["reason"] == "destination_limit"


async def test_a_locked_account_is_sent_nothing(api: Api, outbox: RecordingOutbox) -> None:
    account = await api.sign_up()
    async with api.svc.engine.begin() as conn:
        await user_repo.set_locked(conn, account["id"], api.clock.now(), api.clock.now())
    before = len(outbox.sent)

    assert (await ask(api, account["email"])).status_code == 202
    assert len(outbox.sent) == before

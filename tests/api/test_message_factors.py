"""The sms and email factors over HTTP (API.md "The signed-in user and their factors", "Login",
"Throttling"), on both backends, with the code read from the delivered message."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import phonenumbers
import pytest_asyncio

import conftest
from cloudmfa import metrics
from cloudmfa.delivery.base import Message
from cloudmfa.flows.send_limits import destination_key, sms_budget_key, sms_country
from conftest import Api, bearer
from recording import RecordingOutbox, events_of, new_phone, pass_cooldown, recording_api
from support import admin_session, assert_authenticated, assert_problem, claims, verify

SETTINGS = {
    "enabled_factors": "totp,sms,email,recovery",
    # Outlives a code (10 minutes), so that a code's own expiry can be seen at login.
    "mfa_token_ttl_s": 900,
    "access_token_ttl_s": 1800,  # a session that waits out a code
}


@pytest_asyncio.fixture(scope="module")
async def rig(backend: dict[str, Any]) -> AsyncIterator[tuple[Api, RecordingOutbox]]:
    async with recording_api(conftest.test_settings(backend, **SETTINGS)) as given:
        yield given


@pytest_asyncio.fixture
async def api(rig: tuple[Api, RecordingOutbox]) -> Api:
    return rig[0]


@pytest_asyncio.fixture
async def outbox(rig: tuple[Api, RecordingOutbox]) -> RecordingOutbox:
    return rig[1]


async def enrol(api: Api, headers: dict[str, str], **params: str) -> Any:
    return await api.client.post("/api/v1/me/factors", json=params, headers=headers)


async def activate(api: Api, headers: dict[str, str], factor_id: str, code: str) -> Any:
    return await api.client.post(
        f"/api/v1/me/factors/{factor_id}/activate", json={"code": code}, headers=headers
    )


async def challenge(api: Api, mfa_token: str, factor_id: str) -> Any:
    return await api.client.post(
        "/api/v1/auth/challenge", json={"mfa_token": mfa_token, "factor_id": factor_id}
    )


async def with_factor(
    api: Api, outbox: RecordingOutbox, kind: str, destination: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new account whose first factor (sms or email) is active, activated with the code sent
    at enrolment; its cooldown has passed."""
    user, headers = await api.signed_in(kind)
    field = "phone" if kind == "sms" else "email"
    r = await enrol(api, headers, type=kind, **{field: destination})
    assert r.status_code == 201, r.text
    factor = r.json()
    sent_to = destination.lower() if kind == "email" else destination
    r = await activate(api, headers, factor["id"], outbox.code_to(sent_to))
    assert r.status_code == 200, r.text
    await pass_cooldown(api, factor["id"])
    return user, factor


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


# --- the journeys ----------------------------------------------------------------------------


async def test_sign_in_with_a_code_by_sms(api: Api, outbox: RecordingOutbox) -> None:
    phone = new_phone()
    user, headers = await api.signed_in("sms")
    r = await enrol(api, headers, type="sms", phone=phone, label="My phone")
    assert r.status_code == 201, r.text
    factor = r.json()
    assert factor["status"] == "pending" and factor["type"] == "sms"
    assert factor["destination_hint"] == "+1******" + phone[-4:]
    enrolment_sms = outbox.last_to(phone)
    assert enrolment_sms.channel == "sms"
    assert enrolment_sms.text.splitlines()[-1] == f"@localhost #{outbox.code_to(phone)}"

    r = await activate(api, headers, factor["id"], outbox.code_to(phone))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active" and len(r.json()["recovery_codes"]) == 10
    await pass_cooldown(api, factor["id"])

    login = await api.login(user["email"])
    assert login["status"] == "mfa_required"
    assert {"id": factor["id"], "type": "sms", "label": "My phone"} in login["factors"]
    r = await challenge(api, login["mfa_token"], factor["id"])
    assert r.status_code == 202, r.text
    assert r.json() == {
        "delivery": "sms",
        "destination_hint": factor["destination_hint"],
        "expires_in": 600,
    }
    code = outbox.code_to(phone)
    body = assert_authenticated(await verify(api, login["mfa_token"], factor["id"], code))
    assert claims(body["access_token"])["amr"] == ["pwd", "sms", "mfa"]

    # Single use: the attempt is spent, and the code belongs to no other attempt.
    assert_problem(
        await verify(api, login["mfa_token"], factor["id"], code), 401, "mfa_token_expired"
    )
    again = await api.login(user["email"])
    assert_problem(await verify(api, again["mfa_token"], factor["id"], code), 401, "invalid_code")
    # The trail records each send by channel, never the code or the number.
    sent = await events_of(api, user["id"], "mfa.challenge_sent")
    assert [e["details"]["channel"] for e in sent] == ["sms", "sms"]
    assert code not in str(sent) and phone not in str(sent)


async def test_sign_in_with_a_code_by_email(api: Api, outbox: RecordingOutbox) -> None:
    address = f"Jane.{secrets.token_hex(4)}@Example.COM"
    stored = address.lower()
    user, factor = await with_factor(api, outbox, "email", address)
    assert factor["destination_hint"] == "j***@example.com"

    login = await api.login(user["email"])
    r = await challenge(api, login["mfa_token"], factor["id"])
    assert r.status_code == 202, r.text
    assert r.json()["delivery"] == "email"
    message = outbox.last_to(stored)
    assert message.html is not None and outbox.code_to(stored) in message.html
    body = assert_authenticated(
        await verify(api, login["mfa_token"], factor["id"], outbox.code_to(stored))
    )
    assert claims(body["access_token"])["amr"] == ["pwd", "email", "mfa"]


async def test_a_number_is_kept_and_texted_in_e164(api: Api, outbox: RecordingOutbox) -> None:
    phone = new_phone()
    written = phonenumbers.format_number(
        phonenumbers.parse(phone), phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )  # "+1 415-555-…"
    assert written != phone
    _, headers = await api.signed_in("e164")
    r = await enrol(api, headers, type="sms", phone=written)
    assert r.status_code == 201, r.text
    assert outbox.last_to(phone).to == phone


async def test_a_code_is_bound_to_the_attempt_it_was_sent_for(
    api: Api, outbox: RecordingOutbox
) -> None:
    phone = new_phone()
    user, factor = await with_factor(api, outbox, "sms", phone)
    first, second = await api.login(user["email"]), await api.login(user["email"])
    assert (await challenge(api, first["mfa_token"], factor["id"])).status_code == 202

    r = await verify(api, second["mfa_token"], factor["id"], outbox.code_to(phone))
    assert_problem(r, 401, "invalid_code")


async def test_a_login_code_expires_after_ten_minutes(api: Api, outbox: RecordingOutbox) -> None:
    phone = new_phone()
    user, factor = await with_factor(api, outbox, "sms", phone)
    login = await api.login(user["email"])
    assert (await challenge(api, login["mfa_token"], factor["id"])).status_code == 202
    api.clock.advance(seconds=601)

    r = await verify(api, login["mfa_token"], factor["id"], outbox.code_to(phone))
    assert_problem(r, 401, "invalid_code")


async def test_an_enrolment_code_expires_after_ten_minutes(
    api: Api, outbox: RecordingOutbox
) -> None:
    address = f"late-{secrets.token_hex(4)}@example.com"
    _, headers = await api.signed_in("late")
    factor = (await enrol(api, headers, type="email", email=address)).json()
    api.clock.advance(seconds=601)

    r = await activate(api, headers, factor["id"], outbox.code_to(address))
    assert_problem(r, 401, "invalid_code")


async def test_activation_takes_five_wrong_codes_then_none(
    api: Api, outbox: RecordingOutbox
) -> None:
    phone = new_phone()
    _, headers = await api.signed_in("guess")
    factor = (await enrol(api, headers, type="sms", phone=phone)).json()
    right = outbox.code_to(phone)
    for _ in range(5):
        assert_problem(
            await activate(api, headers, factor["id"], other_code(right)), 401, "invalid_code"
        )

    assert_problem(await activate(api, headers, factor["id"], right), 401, "invalid_code")


# --- sends and resends -----------------------------------------------------------------------


async def test_ten_parallel_challenges_inside_the_cooldown_send_exactly_one_code(
    api: Api, outbox: RecordingOutbox
) -> None:
    phone = new_phone()
    user, factor = await with_factor(api, outbox, "sms", phone)
    login = await api.login(user["email"])
    before = len(outbox.to(phone))

    answers = await asyncio.gather(
        *(challenge(api, login["mfa_token"], factor["id"]) for _ in range(10))
    )

    assert sorted(r.status_code for r in answers) == [202] + [429] * 9
    for refused in (r for r in answers if r.status_code == 429):
        assert_problem(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert len(outbox.to(phone)) == before + 1


async def test_a_resend_replaces_the_code_and_keeps_the_failure_count(
    api: Api, outbox: RecordingOutbox
) -> None:
    phone = new_phone()
    user, factor = await with_factor(api, outbox, "sms", phone)
    login = await api.login(user["email"])
    token = login["mfa_token"]
    assert (await challenge(api, token, factor["id"])).status_code == 202
    old = outbox.code_to(phone)
    for _ in range(2):
        assert_problem(await verify(api, token, factor["id"], other_code(old)), 401, "invalid_code")

    await pass_cooldown(api, factor["id"])
    assert (await challenge(api, token, factor["id"])).status_code == 202
    new = outbox.code_to(phone)
    assert new != old or True  # a repeat is possible; what matters is which one is kept
    if new != old:
        # The old code was replaced: it is a wrong code now (the 3rd).
        assert_problem(await verify(api, token, factor["id"], old), 401, "invalid_code")
    else:
        assert_problem(await verify(api, token, factor["id"], other_code(new)), 401, "invalid_code")
    for _ in range(2):  # the 4th and 5th: the count went on from where it was
        assert_problem(await verify(api, token, factor["id"], other_code(new)), 401, "invalid_code")

    assert_problem(await verify(api, token, factor["id"], new), 401, "mfa_token_expired")


async def test_at_most_five_codes_per_sign_in(api: Api, outbox: RecordingOutbox) -> None:
    address = f"many-{secrets.token_hex(4)}@example.com"
    user, factor = await with_factor(api, outbox, "email", address)
    token = (await api.login(user["email"]))["mfa_token"]
    for _ in range(5):
        assert (await challenge(api, token, factor["id"])).status_code == 202
        await pass_cooldown(api, factor["id"])

    assert_problem(await challenge(api, token, factor["id"]), 429, "rate_limited")


async def test_ten_messages_an_hour_to_one_destination_whoever_asks(
    api: Api, outbox: RecordingOutbox
) -> None:
    phone = new_phone()
    user, factor = await with_factor(api, outbox, "sms", phone)  # 1
    for _ in range(3):  # 3 sign-ins of 3 codes each: 10 in all
        token = (await api.login(user["email"]))["mfa_token"]
        for _ in range(3):
            assert (await challenge(api, token, factor["id"])).status_code == 202
            await pass_cooldown(api, factor["id"])
    assert len(outbox.to(phone)) == 10

    token = (await api.login(user["email"]))["mfa_token"]
    r = await challenge(api, token, factor["id"])
    body = assert_problem(r, 429, "rate_limited")
    assert "destination" in body["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 3600
    # Another account enrolling the same number is held to the same hour.
    _, headers = await api.signed_in("same-number")
    assert_problem(await enrol(api, headers, type="sms", phone=phone), 429, "rate_limited")
    assert len(outbox.to(phone)) == 10
    [event] = await events_of(api, user["id"], "rate_limited")
    assert event["details"]["reason"] == "destination_limit"
    assert phone not in str(event)


# --- what is refused at enrolment ------------------------------------------------------------


async def test_a_premium_rate_number_is_refused_and_nothing_is_sent(
    api: Api, outbox: RecordingOutbox
) -> None:
    premium = phonenumbers.format_number(
        phonenumbers.example_number_for_type("GB", phonenumbers.PhoneNumberType.PREMIUM_RATE),
        phonenumbers.PhoneNumberFormat.E164,
    )
    _, headers = await api.signed_in("premium")
    before = len(outbox.sent)

    body = assert_problem(
        await enrol(api, headers, type="sms", phone=premium), 422, "validation_error"
    )

    assert "mobile" in body["detail"] and premium not in body["detail"]
    assert len(outbox.sent) == before
    assert (await api.client.get("/api/v1/me/factors", headers=headers)).json()["factors"] == []


async def test_what_is_not_a_phone_number_or_an_address_is_a_validation_error(
    api: Api, outbox: RecordingOutbox
) -> None:
    _, headers = await api.signed_in("bad")
    before = len(outbox.sent)
    for params in (
        {"type": "sms", "phone": "4155550123"},
        {"type": "sms", "phone": "+1 555"},
        {"type": "sms"},
        {"type": "email", "email": "not-an-address"},
        {"type": "email"},
    ):
        assert_problem(await enrol(api, headers, **params), 422, "validation_error")
    assert len(outbox.sent) == before


# --- notices ---------------------------------------------------------------------------------


async def test_the_account_is_told_of_each_change_to_how_it_is_protected(
    api: Api, outbox: RecordingOutbox
) -> None:
    phone = new_phone()
    user, factor = await with_factor(api, outbox, "sms", phone)
    account = user["email"]
    [added] = [m for m in outbox.to(account) if "added" in m.subject]
    assert "My phone" not in added.text and '"Phone"' in added.text

    login = await api.login(account)
    assert (await challenge(api, login["mfa_token"], factor["id"])).status_code == 202
    tokens = assert_authenticated(
        await verify(api, login["mfa_token"], factor["id"], outbox.code_to(phone))
    )
    headers = bearer(tokens["access_token"])
    codes = (await api.client.post("/api/v1/me/recovery-codes", headers=headers)).json()
    r = await api.client.post(
        "/api/v1/me/password",
        json={"current_password": conftest.PASSWORD, "new_password": "saffron-glacier-lantern-97"},
        headers=headers,
    )
    assert r.status_code == 204, r.text
    r = await api.client.delete(f"/api/v1/me/factors/{factor['id']}", headers=headers)
    assert r.status_code == 204, r.text

    notices = outbox.to(account)
    subjects = [m.subject for m in notices]
    assert subjects == [
        "cloudmfa: A sign-in method was added",
        "cloudmfa: New recovery codes were made",
        "cloudmfa: Your password was changed",
        "cloudmfa: A sign-in method was removed",
    ]
    everything = " ".join(m.text + (m.html or "") for m in notices)
    for secret in (*codes["recovery_codes"], outbox.code_to(phone), phone, "saffron"):
        assert secret not in everything
    assert not re.search(r"\b\d{6}\b", everything)


# --- deployments that narrow SMS -------------------------------------------------------------


async def test_countries_outside_the_allow_list_are_refused_at_enrolment(
    backend: dict[str, Any],
) -> None:
    settings = conftest.test_settings(backend, **SETTINGS, sms_allowed_countries="us, ca")
    async with recording_api(settings) as (api, outbox):
        _, headers = await api.signed_in("country")
        body = assert_problem(
            await enrol(api, headers, type="sms", phone="+33612345678"), 422, "validation_error"
        )
        assert "FR" in body["detail"]
        assert outbox.sent == []
        assert (await enrol(api, headers, type="sms", phone=new_phone())).status_code == 201


async def test_sms_budgets_per_country_and_in_all(backend: dict[str, Any]) -> None:
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"  # budgets of their own
    settings = conftest.test_settings(
        {**backend, "redis_key_prefix": prefix},
        **SETTINGS,
        sms_country_hourly_budget=2,
        sms_global_hourly_budget=3,
    )
    try:
        async with recording_api(settings) as (api, outbox):
            user, headers = await api.signed_in("budget")
            for _ in range(2):
                assert (await enrol(api, headers, type="sms", phone=new_phone())).status_code == 201
            r = await enrol(api, headers, type="sms", phone=new_phone())
            assert_problem(r, 429, "rate_limited")
            assert 1 <= int(r.headers["Retry-After"]) <= 3600
            # Another country still has its budget, until the global one is spent.
            assert (await enrol(api, headers, type="sms", phone="+33612345678")).status_code == 201
            assert_problem(
                await enrol(api, headers, type="sms", phone="+33612345679"), 429, "rate_limited"
            )
            # Email is not SMS: no budget of these applies.
            address = f"b-{secrets.token_hex(4)}@example.com"
            assert (await enrol(api, headers, type="email", email=address)).status_code == 201

            assert len([m for m in outbox.sent if m.channel == "sms"]) == 3
            reasons = {
                (e["details"]["reason"], e["details"].get("country"))
                for e in await events_of(api, user["id"], "rate_limited")
            }
            assert reasons == {("sms_country_budget", "US"), ("sms_global_budget", None)}
    finally:
        if backend.get("redis_url"):
            await conftest.drop_redis_prefix(prefix)


# --- what a refused send leaves behind --------------------------------------------------------


async def send_counts(api: Api, to: Message) -> list[str | None]:
    """The hourly counts a message to ``to`` takes a unit of: its destination's, its country's
    SMS budget and the global one."""
    keys = [destination_key(to), sms_budget_key(sms_country(to.to)), sms_budget_key("*")]
    return [await api.svc.ephemeral.get(key) for key in keys]


def refused_by(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("cloudmfa_rate_limited_total", {"kind": kind}) or 0


async def test_a_refused_send_leaves_every_count_and_the_code_as_they_were(
    backend: dict[str, Any],
) -> None:
    """Refused by the cooldown, then by the country's budget: neither takes a unit of any
    count, nor a send of the attempt, nor replaces the code already sent; the budget's refusal
    names the country, in the audit trail and the metrics."""
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"  # budgets of their own
    settings = conftest.test_settings(
        {**backend, "redis_key_prefix": prefix},
        **SETTINGS,
        sms_country_hourly_budget=2,
        mfa_max_sends=2,
    )
    try:
        async with recording_api(settings) as (api, outbox):
            phone = new_phone()
            user, factor = await with_factor(api, outbox, "sms", phone)  # the enrolment: 1
            token = (await api.login(user["email"]))["mfa_token"]
            assert (await challenge(api, token, factor["id"])).status_code == 202  # 2
            code = outbox.code_to(phone)
            texted = Message("sms", phone, "", "")
            assert await send_counts(api, texted) == ["2", "2", "2"]
            sent_event, _enrolments = await events_of(api, user["id"], "mfa.challenge_sent")
            assert sent_event["details"] == {
                "factor_id": factor["id"],
                "factor_type": "sms",
                "channel": "sms",
            }

            r = await challenge(api, token, factor["id"])
            assert_problem(r, 429, "rate_limited")
            assert 1 <= int(r.headers["Retry-After"]) <= 30  # the cooldown's
            await pass_cooldown(api, factor["id"])
            before = refused_by("sms_budget")
            r = await challenge(api, token, factor["id"])
            body = assert_problem(r, 429, "rate_limited")
            assert "country" in body["detail"]
            assert 30 < int(r.headers["Retry-After"]) <= 3600  # the budget's hour

            assert refused_by("sms_budget") == before + 1
            assert await send_counts(api, texted) == ["2", "2", "2"]
            assert len(outbox.to(phone)) == 2
            [event] = await events_of(api, user["id"], "rate_limited")
            assert (event["details"]["reason"], event["details"]["country"]) == (
                "sms_country_budget",
                "US",
            )
            # The code sent stays the one that counts.
            assert_authenticated(await verify(api, token, factor["id"], code))
    finally:
        if backend.get("redis_url"):
            await conftest.drop_redis_prefix(prefix)


async def test_a_send_past_the_attempts_count_gives_back_its_units_and_keeps_the_last_code(
    api: Api, outbox: RecordingOutbox
) -> None:
    address = f"past-{secrets.token_hex(4)}@example.com"
    user, factor = await with_factor(api, outbox, "email", address)
    mailed = Message("email", address, "", "")
    token = (await api.login(user["email"]))["mfa_token"]
    for _ in range(5):
        assert (await challenge(api, token, factor["id"])).status_code == 202
        await pass_cooldown(api, factor["id"])
    last = outbox.code_to(address)
    [counted, *_] = await send_counts(api, mailed)
    before = refused_by("attempt_sends")

    r = await challenge(api, token, factor["id"])

    body = assert_problem(r, 429, "rate_limited")
    assert "start again" in body["detail"]
    assert refused_by("attempt_sends") == before + 1
    assert (await send_counts(api, mailed))[0] == counted == "6"  # with the enrolment's
    assert len(outbox.to(address)) == 6
    assert_authenticated(await verify(api, token, factor["id"], last))


async def test_parallel_challenges_inside_the_cooldown_count_one_send(
    api: Api, outbox: RecordingOutbox
) -> None:
    """Of ten at once, one takes the cooldown: the others count against no limit and use up
    none of the attempt's sends (four more are still allowed)."""
    phone = new_phone()
    user, factor = await with_factor(api, outbox, "sms", phone)
    token = (await api.login(user["email"]))["mfa_token"]
    [destination, *_] = await send_counts(api, Message("sms", phone, "", ""))

    answers = await asyncio.gather(*(challenge(api, token, factor["id"]) for _ in range(10)))

    assert sorted(r.status_code for r in answers) == [202] + [429] * 9
    assert (await send_counts(api, Message("sms", phone, "", "")))[0] == str(int(destination) + 1)
    for _ in range(4):
        await pass_cooldown(api, factor["id"])
        assert (await challenge(api, token, factor["id"])).status_code == 202
    await pass_cooldown(api, factor["id"])
    assert_problem(await challenge(api, token, factor["id"]), 429, "rate_limited")


async def test_the_account_is_told_when_an_administrator_resets_its_mfa(
    api: Api, outbox: RecordingOutbox
) -> None:
    user, _ = await with_factor(api, outbox, "email", f"r-{secrets.token_hex(4)}@example.com")
    _, admin_headers = await admin_session(api)

    r = await api.client.delete(f"/api/v1/admin/users/{user['id']}/factors", headers=admin_headers)

    assert r.status_code == 204, r.text
    notice = outbox.last_to(user["email"])
    assert notice.subject == "cloudmfa: Your sign-in methods were reset"
    assert "administrator" in notice.text


async def test_a_number_of_a_country_allowed_no_longer_is_sent_nothing(
    backend: dict[str, Any],
) -> None:
    """The allow-list narrowed after enrolment: the factor's challenge sends nothing."""
    async with recording_api(conftest.test_settings(backend, **SETTINGS)) as (api, outbox):
        user, factor = await with_factor(api, outbox, "sms", "+33612345670")
        ephemeral_prefix = api.svc.settings.redis_key_prefix
    narrowed = conftest.test_settings(
        backend, **SETTINGS, sms_allowed_countries="US", redis_key_prefix=ephemeral_prefix
    )
    async with recording_api(narrowed) as (api, outbox):
        login = await api.login(user["email"])
        r = await challenge(api, login["mfa_token"], factor["id"])
        assert_problem(r, 422, "validation_error")
        assert outbox.sent == []


async def test_a_deployment_may_turn_sms_and_email_off(backend: dict[str, Any]) -> None:
    settings = conftest.test_settings(backend, enabled_factors="totp,recovery")
    async with recording_api(settings) as (api, outbox):
        _, headers = await api.signed_in("off")
        for params in ({"type": "sms", "phone": new_phone()}, {"type": "email", "email": "a@b.io"}):
            body = assert_problem(await enrol(api, headers, **params), 422, "validation_error")
            assert "not offered" in body["detail"]
        assert outbox.sent == []

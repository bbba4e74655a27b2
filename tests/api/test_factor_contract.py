"""The factor contract proven with stub factor types (tests/stub_factors/), over HTTP, before the
real SMS and WebAuthn types arrive: one that sends a code by message and one that stores a
credential. Each is a module and one registry entry; no flow knows them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

import conftest
import recording
from cloudmfa.app import create_app
from cloudmfa.clock import FrozenClock
from cloudmfa.factors.registry import FACTORIES, FactorTypeUnavailable
from cloudmfa.flows.send_limits import cooldown_key
from cloudmfa.services import Services
from cloudmfa.store.models import factors
from conftest import ALL_BACKENDS, Api, bearer
from stub_factors.message_code import MessageCodeFactor
from stub_factors.stored_credential import StoredCredentialFactor, sign
from support import assert_authenticated, assert_problem, claims

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

STUB_FACTORIES = {
    **FACTORIES,
    "sms": lambda _settings, deps: MessageCodeFactor(deps),
    "webauthn": lambda _settings, deps: StoredCredentialFactor(deps),
}
PHONE = "+14155550123"


class RecordingOutbox(recording.RecordingOutbox):
    """Delivery as the flows see it; keeps what it was handed."""

    def last_code(self) -> str:
        match = re.search(r"\b(\d{6})\b", self.sent[-1].text)
        assert match, self.sent[-1].text
        return match.group(1)


@pytest_asyncio.fixture(scope="module")
async def api(backend: dict[str, Any]) -> AsyncIterator[Api]:
    settings = conftest.test_settings(
        backend,
        enabled_factors="totp,sms,webauthn,recovery",
        otp_resend_cooldown_s=30,
        destination_hourly_limit=1000,  # every stub enrolment uses the one number
    )
    clock = FrozenClock()
    outbox = RecordingOutbox()
    svc = Services.build(settings, clock=clock, factories=STUB_FACTORIES, outbox=outbox)
    outbox.services = svc
    app = create_app(settings, services=svc)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
        base_url="http://testserver",
    )
    async with app.router.lifespan_context(app), client:
        yield Api(client=client, svc=svc, clock=clock)


async def pass_cooldown(api: Api, factor_id: str) -> None:
    """As if the resend cooldown had passed (a Redis TTL follows the real clock, not the test's)."""
    await api.svc.ephemeral.delete(cooldown_key(factor_id))


def outbox_of(api: Api) -> RecordingOutbox:
    outbox = api.svc.outbox
    assert isinstance(outbox, RecordingOutbox)
    return outbox


async def enrol_phone(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh account whose first factor is the stub SMS one, activated with the sent code."""
    user, headers = await api.signed_in("stubsms")
    r = await api.client.post(
        "/api/v1/me/factors", json={"type": "sms", "phone": PHONE}, headers=headers
    )
    assert r.status_code == 201, r.text
    factor = r.json()
    r = await api.client.post(
        f"/api/v1/me/factors/{factor['id']}/activate",
        json={"code": outbox_of(api).last_code()},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return user, factor


async def challenge(api: Api, mfa_token: str, factor_id: str) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/challenge", json={"mfa_token": mfa_token, "factor_id": factor_id}
    )


async def verify(api: Api, mfa_token: str, factor_id: str, **proof: Any) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/verify", json={"mfa_token": mfa_token, "factor_id": factor_id, **proof}
    )


# --- a factor that sends a message -------------------------------------------------------------


async def test_enrolment_hands_the_message_to_delivery_and_shows_only_a_hint(api: Api) -> None:
    before = len(outbox_of(api).sent)
    user, factor = await enrol_phone(api)

    assert factor["status"] == "pending"
    assert factor["destination_hint"] == "+1******0123"
    assert PHONE not in str(factor)
    [message] = [m for m in outbox_of(api).sent[before:] if m.channel == "sms"]
    assert (message.channel, message.to) == ("sms", PHONE)
    assert "Phone" in {f["label"] for f in (await api.login(user["email"]))["factors"]}


async def test_a_challenge_sends_a_fresh_code_that_signs_in_once(api: Api) -> None:
    user, factor = await enrol_phone(api)
    await pass_cooldown(api, factor["id"])  # the enrolment's send started it
    login = await api.login(user["email"])

    r = await challenge(api, login["mfa_token"], factor["id"])

    assert r.status_code == 202, r.text
    assert r.json() == {"delivery": "sms", "destination_hint": "+1******0123", "expires_in": 600}
    code = outbox_of(api).last_code()
    body = assert_authenticated(await verify(api, login["mfa_token"], factor["id"], code=code))
    assert claims(body["access_token"])["amr"] == ["pwd", "sms", "mfa"]
    # The code belonged to that attempt, which is spent: a new attempt cannot use it.
    again = await api.login(user["email"])
    assert_problem(
        await verify(api, again["mfa_token"], factor["id"], code=code), 401, "invalid_code"
    )


async def test_a_code_is_bound_to_the_attempt_it_was_sent_for(api: Api) -> None:
    user, factor = await enrol_phone(api)
    await pass_cooldown(api, factor["id"])
    first, second = await api.login(user["email"]), await api.login(user["email"])
    assert (await challenge(api, first["mfa_token"], factor["id"])).status_code == 202
    code = outbox_of(api).last_code()

    r = await verify(api, second["mfa_token"], factor["id"], code=code)

    assert_problem(r, 401, "invalid_code")


async def test_a_resend_inside_the_cooldown_is_refused_and_sends_nothing(api: Api) -> None:
    user, factor = await enrol_phone(api)
    login = await api.login(user["email"])
    sent = len(outbox_of(api).sent)

    r = await challenge(api, login["mfa_token"], factor["id"])  # the enrolment's send was now

    body = assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 30, body
    assert len(outbox_of(api).sent) == sent


async def test_an_attempt_sends_at_most_five_codes(api: Api) -> None:
    user, factor = await enrol_phone(api)
    login = await api.login(user["email"])
    # Refused by the cooldown (the enrolment's send started it): these use up no sends.
    for _ in range(3):
        assert (await challenge(api, login["mfa_token"], factor["id"])).status_code == 429
    statuses = []
    for _ in range(6):
        await pass_cooldown(api, factor["id"])
        statuses.append((await challenge(api, login["mfa_token"], factor["id"])).status_code)

    assert statuses == [202] * 5 + [429]


async def test_the_sent_code_is_audited_as_sent_and_never_written_down(api: Api) -> None:
    user, factor = await enrol_phone(api)
    await pass_cooldown(api, factor["id"])
    login = await api.login(user["email"])
    await challenge(api, login["mfa_token"], factor["id"])
    code = outbox_of(api).last_code()
    headers = bearer(
        assert_authenticated(await verify(api, login["mfa_token"], factor["id"], code=code))[
            "access_token"
        ]
    )

    events = (await api.client.get("/api/v1/me/events?limit=200", headers=headers)).json()
    sent = [e for e in events["events"] if e["type"] == "mfa.challenge_sent"]
    assert len(sent) == 2  # at enrolment and at the challenge
    assert code not in str(events) and PHONE not in str(events)


# --- a factor that stores a credential ----------------------------------------------------------


async def enrol_key(
    api: Api, headers: dict[str, str], credential_id: str, key: str = "k1"
) -> tuple[str, httpx.Response]:
    r = await api.client.post("/api/v1/me/factors", json={"type": "webauthn"}, headers=headers)
    assert r.status_code == 201, r.text
    factor = r.json()
    challenge_ = factor["public_key"]["challenge"]
    credential = {
        "id": credential_id,
        "key": key,
        "counter": 1,
        "signature": sign(key, challenge_, 1),
    }
    r = await api.client.post(
        f"/api/v1/me/factors/{factor['id']}/activate",
        json={"credential": credential},
        headers=headers,
    )
    return factor["id"], r


async def test_activation_stores_the_credential_in_the_factor_row(api: Api) -> None:
    _, headers = await api.signed_in("stubkey")
    factor_id, r = await enrol_key(api, headers, "cred-stored")

    assert r.status_code == 200, r.text
    async with api.svc.engine.connect() as conn:
        row = (await conn.execute(select(factors).where(factors.c.id == factor_id))).one()
    assert (row.lookup_key, row.counter, row.data) == ("cred-stored", 1, {"key": "k1"})


async def test_a_credential_can_be_registered_only_once(api: Api) -> None:
    _, first = await api.signed_in("stubkey1")
    _, second = await api.signed_in("stubkey2")
    assert (await enrol_key(api, first, "cred-twice"))[1].status_code == 200

    _, r = await enrol_key(api, second, "cred-twice")

    assert_problem(r, 422, "validation_error")


async def test_a_credential_signs_in_with_options_and_a_counter_that_only_moves_forward(
    api: Api,
) -> None:
    user, headers = await api.signed_in("stubkey3")
    factor_id, r = await enrol_key(api, headers, "cred-login")
    assert r.status_code == 200, r.text

    login = await api.login(user["email"])
    r = await challenge(api, login["mfa_token"], factor_id)
    assert r.status_code == 200, r.text
    options = r.json()["public_key"]
    assert options["allowCredentials"] == [{"id": "cred-login"}]
    credential = {
        "id": "cred-login",
        "counter": 2,
        "signature": sign("k1", options["challenge"], 2),
    }
    body = assert_authenticated(
        await verify(api, login["mfa_token"], factor_id, credential=credential)
    )
    token = claims(body["access_token"])
    assert token["amr"] == ["pwd", "hwk", "user", "mfa"] and token["acr"] == "phr"

    # A cloned authenticator (a count that does not move forward) is refused.
    login = await api.login(user["email"])
    options = (await challenge(api, login["mfa_token"], factor_id)).json()["public_key"]
    stale = {"id": "cred-login", "counter": 2, "signature": sign("k1", options["challenge"], 2)}
    assert_problem(
        await verify(api, login["mfa_token"], factor_id, credential=stale), 401, "invalid_code"
    )


async def test_a_code_for_a_credential_factor_is_refused_as_the_wrong_kind_of_proof(
    api: Api,
) -> None:
    user, headers = await api.signed_in("stubkey4")
    factor_id, _ = await enrol_key(api, headers, "cred-kind")
    login = await api.login(user["email"])

    body = assert_problem(
        await verify(api, login["mfa_token"], factor_id, code="123456"), 401, "invalid_code"
    )

    assert "credential" in body["detail"]


# --- the registry ------------------------------------------------------------------------------


def test_an_enabled_type_that_is_not_built_stops_the_service_with_a_clear_message(
    backend: dict[str, Any],
) -> None:
    settings = conftest.test_settings(backend, enabled_factors="totp,sms,recovery")
    without_sms = {name: make for name, make in FACTORIES.items() if name != "sms"}

    with pytest.raises(FactorTypeUnavailable, match="sms, which this release does not provide"):
        Services.build(settings, factories=without_sms)


def test_the_default_enabled_types_are_the_built_ones() -> None:
    from cloudmfa.config import Settings

    enabled = set(Settings(_env_file=None).enabled_factors)  # type: ignore[call-arg]
    assert {"totp", "sms", "email", "webauthn", "recovery"} <= enabled
    assert set(Settings(_env_file=None).enabled_factors) == set(FACTORIES)  # type: ignore[call-arg]

"""Passkeys (API.md "Login", "Passwordless login with a passkey", "The signed-in user and their
factors"): registration, the second step of login, passwordless sign-in, managing passkeys,
and every bad answer a browser or an attacker can send, on SQLite and PostgreSQL.

The authenticator is tests/webauthn_authenticator.py: real keys, real signatures, checked by
py_webauthn exactly as a browser's would be.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

import conftest
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import list_events
from conftest import Api, bearer, start_api
from support import assert_authenticated, assert_problem, claims
from webauthn_authenticator import BE, BS, UP, UV, SoftAuthenticator, b64url, unb64url

ORIGIN = "http://localhost:8000"  # the test settings' public URL


@dataclass
class PasskeyUser:
    id: str
    email: str
    factor_id: str
    authenticator: SoftAuthenticator
    recovery_codes: list[str]


async def enrol(api: Api, headers: dict[str, str], label: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "webauthn"}
    if label is not None:
        body["label"] = label
    r = await api.client.post("/api/v1/me/factors", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def activate(
    api: Api, headers: dict[str, str], factor_id: str, credential: Any
) -> httpx.Response:
    return await api.client.post(
        f"/api/v1/me/factors/{factor_id}/activate",
        json={"credential": credential},
        headers=headers,
    )


async def passkey_user(api: Api, tag: str = "passkey", **authenticator: Any) -> PasskeyUser:
    """A new account whose only factor is a passkey, registered from its first session."""
    user, headers = await api.signed_in(tag)
    factor = await enrol(api, headers, label="Laptop")
    auth = SoftAuthenticator(origin=ORIGIN, **authenticator)
    r = await activate(api, headers, factor["id"], auth.create(factor["public_key"]))
    assert r.status_code == 200, r.text
    return PasskeyUser(user["id"], user["email"], factor["id"], auth, r.json()["recovery_codes"])


async def second_step(api: Api, user: PasskeyUser) -> tuple[str, dict[str, Any]]:
    """Password, then the factor's challenge: the mfa_token and the request options."""
    start = await api.login(user.email)
    assert start["status"] == "mfa_required", start
    r = await api.client.post(
        "/api/v1/auth/challenge",
        json={"mfa_token": start["mfa_token"], "factor_id": user.factor_id},
    )
    assert r.status_code == 200, r.text
    return start["mfa_token"], r.json()["public_key"]


async def verify(api: Api, mfa_token: str, factor_id: str, credential: Any) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/verify",
        json={"mfa_token": mfa_token, "factor_id": factor_id, "credential": credential},
    )


async def passkey_options(api: Api) -> dict[str, Any]:
    r = await api.client.post("/api/v1/auth/passkey/options", json={})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def passkey_verify(api: Api, challenge_id: str, credential: Any) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/passkey/verify", json={"challenge_id": challenge_id, "credential": credential}
    )


async def events_of(api: Api, user_id: str) -> list[dict[str, Any]]:
    async with api.svc.engine.connect() as conn:
        return await list_events(conn, user_id=user_id, limit=1000)


def decoded_length(text: str) -> int:
    return len(unb64url(text))


# --- registration ------------------------------------------------------------------------------


async def test_enrolment_answers_creation_options_for_a_user_verified_passkey(api: Api) -> None:
    user, headers = await api.signed_in("pkoptions")
    factor = await enrol(api, headers)

    assert (factor["type"], factor["status"]) == ("webauthn", "pending")
    options = factor["public_key"]
    assert "publicKey" not in options  # the options object itself (API.md)
    assert options["rp"] == {"id": "localhost", "name": "cloudmfa"}
    assert options["user"]["name"] == user["email"]
    assert decoded_length(options["challenge"]) >= 16
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == []


async def test_registration_activates_the_passkey_with_recovery_codes_and_lists_its_details(
    api: Api,
) -> None:
    user, headers = await api.signed_in("pkreg")
    factor = await enrol(api, headers)
    auth = SoftAuthenticator(origin=ORIGIN)
    r = await activate(api, headers, factor["id"], auth.create(factor["public_key"]))

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["type"], body["status"]) == (factor["id"], "webauthn", "active")
    assert len(body["recovery_codes"]) == 10
    r = await api.client.get("/api/v1/me/factors", headers=headers)
    [listed] = r.json()["factors"]
    assert listed["label"] == "Passkey"
    assert listed["authenticator"] == "iCloud Keychain"
    assert listed["synced"] is True and listed["backup_eligible"] is True
    assert listed["transports"] == ["internal", "hybrid"]
    assert listed["last_used_at"] is not None
    assert "public_key" not in listed and "credential_id" not in str(listed)


async def test_a_second_passkey_excludes_the_first_and_one_credential_registers_once(
    api: Api,
) -> None:
    user = await passkey_user(api, "pkexclude")
    session = await passkey_sign_in(api, user)
    headers = bearer(session["access_token"])
    factor = await enrol(api, headers, label="Phone")
    [excluded] = factor["public_key"]["excludeCredentials"]
    [credential_id] = user.authenticator.credentials
    assert excluded["id"] == b64url(credential_id)

    # A forged answer naming the first credential's id over a new key
    created = user.authenticator.create(factor["public_key"])
    r = await activate(api, headers, factor["id"], _with_credential_id(created, credential_id))
    assert_problem(r, 401, "invalid_code")
    # The first credential itself registered again (an authenticator ignoring the exclusion)
    again = user.authenticator.create(factor["public_key"], again=credential_id)
    r = await activate(api, headers, factor["id"], again)
    assert_problem(r, 422, "validation_error")
    assert "already registered" in r.json()["detail"]


def _with_credential_id(credential: dict[str, Any], credential_id: bytes) -> dict[str, Any]:
    forged = copy.deepcopy(credential)
    forged["id"] = forged["rawId"] = b64url(credential_id)
    return forged


async def test_the_activation_challenge_is_the_enrolments_own(api: Api) -> None:
    _, headers = await api.signed_in("pkactchal")
    factor = await enrol(api, headers)
    other = await enrol(api, headers)
    auth = SoftAuthenticator(origin=ORIGIN)
    # Answered to the other enrolment's challenge
    created = auth.create(factor["public_key"], challenge=other["public_key"]["challenge"])
    assert_problem(await activate(api, headers, factor["id"], created), 401, "invalid_code")


async def test_registration_refuses_bad_answers(api: Api) -> None:
    def bad_answers(auth: SoftAuthenticator, options: dict[str, Any]) -> dict[str, Any]:
        return {
            "another origin": auth.create(options, origin="https://evil.example"),
            "another rp id": auth.create(options, rp_id="evil.example"),
            "no user presence": auth.create(options, flags=UV),
            "no user verification": auth.create(options, flags=UP),
            "an EdDSA key from another page": auth.create(options, eddsa=True, origin="http://x"),
            "garbage attestation": {
                **auth.create(options),
                "response": {"clientDataJSON": "AAAA", "attestationObject": "notcbor"},
            },
            "no id": {**auth.create(options), "id": "", "rawId": ""},
            "empty": {},
        }

    # A pending factor takes four wrong answers and still activates with the right one (the
    # fifth wrong one ends it, as for codes: flows/enrolment.py), so the bad answers are tried
    # four to an enrolment, each a first factor of its own account.
    tried = 0
    for batch in range(2):
        _, headers = await api.signed_in(f"pkregbad{batch}")
        factor = await enrol(api, headers)
        options = factor["public_key"]
        auth = SoftAuthenticator(origin=ORIGIN)
        answers = list(bad_answers(auth, options).items())[batch * 4 : batch * 4 + 4]
        for name, credential in answers:
            r = await activate(api, headers, factor["id"], credential)
            assert r.status_code == 401, (name, r.text)
            assert_problem(r, 401, "invalid_code")
            tried += 1
        # Not a JSON object at all: the request itself is malformed (and counts no try)
        assert_problem(await activate(api, headers, factor["id"], "abc"), 422, "validation_error")
        # The right answer still works afterwards
        r = await activate(api, headers, factor["id"], auth.create(options, eddsa=True))
        assert r.status_code == 200, r.text
    assert tried == 8


async def test_an_expired_enrolment_cannot_be_activated(api: Api) -> None:
    _, headers = await api.signed_in("pkexpired")
    factor = await enrol(api, headers)
    await api.svc.ephemeral.delete(f"enrolment_kept:{factor['id']}")  # as if its time passed
    created = SoftAuthenticator(origin=ORIGIN).create(factor["public_key"])
    assert_problem(await activate(api, headers, factor["id"], created), 401, "invalid_code")


# --- the second step of login ------------------------------------------------------------------


async def test_a_passkey_as_second_factor_signs_in_with_hwk_user_mfa_and_phr(api: Api) -> None:
    user = await passkey_user(api, "pk2fa")
    mfa_token, options = await second_step(api, user)

    assert [c["id"] for c in options["allowCredentials"]] == [
        b64url(cid) for cid in user.authenticator.credentials
    ]
    assert options["rpId"] == "localhost" and options["userVerification"] == "required"
    r = await verify(api, mfa_token, user.factor_id, user.authenticator.get(options))
    token = claims(assert_authenticated(r)["access_token"])
    assert token["amr"] == ["pwd", "hwk", "user", "mfa"]
    assert token["acr"] == "phr"
    types = [e["type"] for e in await events_of(api, user.id)]
    assert "mfa.succeeded" in types and "login.succeeded" in types


async def test_login_offers_the_passkey_and_recovery_codes(api: Api) -> None:
    user = await passkey_user(api, "pkoffer")
    start = await api.login(user.email)
    assert [(f["id"], f["type"], f["label"]) for f in start["factors"]] == [
        (user.factor_id, "webauthn", "Laptop"),
        ("recovery", "recovery", "Recovery code"),
    ]


async def test_a_user_with_only_passkeys_recovers_with_a_recovery_code(api: Api) -> None:
    user = await passkey_user(api, "pkrecover")
    start = await api.login(user.email)
    r = await api.client.post(
        "/api/v1/auth/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": "recovery",
            "code": user.recovery_codes[0],
        },
    )
    assert claims(assert_authenticated(r)["access_token"])["amr"] == ["pwd", "rec", "mfa"]


async def test_any_of_the_users_passkeys_answers_the_challenge(api: Api) -> None:
    user = await passkey_user(api, "pktwo")
    session = await passkey_sign_in(api, user)
    headers = bearer(session["access_token"])
    factor = await enrol(api, headers, label="Key")
    second = SoftAuthenticator(origin=ORIGIN, synced=False, aaguid="0" * 32)
    assert (
        await activate(api, headers, factor["id"], second.create(factor["public_key"]))
    ).is_success

    mfa_token, options = await second_step(api, user)  # the first factor chosen
    assert len(options["allowCredentials"]) == 2
    r = await verify(api, mfa_token, user.factor_id, second.get(options))
    assert_authenticated(r)
    listed = (await api.client.get("/api/v1/me/factors", headers=headers)).json()["factors"]
    key = next(f for f in listed if f["id"] == factor["id"])
    assert key["authenticator"] is None and key["synced"] is False
    assert key["last_used_at"] is not None


async def test_second_step_refuses_bad_assertions_as_invalid_code(api: Api) -> None:
    user = await passkey_user(api, "pk2fabad")
    stranger = await passkey_user(api, "pkstranger")
    auth = user.authenticator
    [stranger_id] = stranger.authenticator.credentials
    cases: dict[str, Callable[[dict[str, Any]], Any]] = {
        "another origin": lambda o: auth.get(o, origin="https://evil.example"),
        "another rp id hash": lambda o: auth.get(o, rp_id="evil.example"),
        "no user presence": lambda o: auth.get(o, flags=UV),
        "no user verification": lambda o: auth.get(o, flags=UP | BE | BS),
        "another user's credential": lambda o: stranger.authenticator.get(
            o, credential_id=stranger_id
        ),
        "an unknown credential": _unknown_assertion,
        "another challenge": lambda o: auth.get(o, challenge=b64url(b"x" * 32)),
        "a bad signature": lambda o: _bad_signature(auth.get(o)),
        "malformed": lambda o: {"id": "!!", "rawId": "!!", "response": {}},
    }
    for name, make in cases.items():
        # A fresh sign-in for each: five wrong answers would end an mfa_token.
        mfa_token, options = await second_step(api, user)
        r = await verify(api, mfa_token, user.factor_id, make(options))
        assert r.status_code == 401, (name, r.text)
        assert_problem(r, 401, "invalid_code")
    await api.svc.throttle.reset(user.email)


def _unknown_assertion(options: dict[str, Any]) -> dict[str, Any]:
    other = SoftAuthenticator(origin=ORIGIN)
    other.create(
        {
            "rp": {"id": "localhost"},
            "user": {"id": b64url(b"someone")},
            "challenge": options["challenge"],
        }
    )
    return other.get({"challenge": options["challenge"]})


def _bad_signature(credential: dict[str, Any]) -> dict[str, Any]:
    forged = copy.deepcopy(credential)
    signature = bytearray(unb64url(forged["response"]["signature"]))
    signature[-1] ^= 0x01
    forged["response"]["signature"] = b64url(bytes(signature))
    return forged


async def test_a_second_factor_assertion_needs_its_challenge_and_is_used_once(api: Api) -> None:
    user = await passkey_user(api, "pkreplay")
    start = await api.login(user.email)
    # No challenge asked for in this attempt
    options = {"challenge": b64url(b"c" * 32), "allowCredentials": []}
    r = await verify(api, start["mfa_token"], user.factor_id, user.authenticator.get(options))
    assert_problem(r, 401, "invalid_code")

    mfa_token, options = await second_step(api, user)
    assertion = user.authenticator.get(options)
    assert_authenticated(await verify(api, mfa_token, user.factor_id, assertion))
    # Replayed in the same attempt, and in a new one (whose challenge differs)
    assert_problem(
        await verify(api, mfa_token, user.factor_id, assertion), 401, "mfa_token_expired"
    )
    fresh_token, _ = await second_step(api, user)
    assert_problem(await verify(api, fresh_token, user.factor_id, assertion), 401, "invalid_code")


async def test_a_sign_count_going_backwards_is_refused_and_recorded(api: Api) -> None:
    user = await passkey_user(api, "pkclone")
    mfa_token, options = await second_step(api, user)
    assert_authenticated(
        await verify(api, mfa_token, user.factor_id, user.authenticator.get(options, sign_count=7))
    )
    mfa_token, options = await second_step(api, user)
    cloned = user.authenticator.get(options, sign_count=3)
    assert_problem(await verify(api, mfa_token, user.factor_id, cloned), 401, "invalid_code")
    # The same count again is a clone (or a replay) too
    same = user.authenticator.get(options, sign_count=7)
    assert_problem(await verify(api, mfa_token, user.factor_id, same), 401, "invalid_code")
    alarms = [e for e in await events_of(api, user.id) if e["type"] == "webauthn.clone_detected"]
    assert len(alarms) == 2
    assert alarms[-1]["details"]["stored_sign_count"] == 7
    assert {a["details"]["presented_sign_count"] for a in alarms} == {3, 7}
    # A forged assertion with a low count never raises the alarm: the signature comes first
    forged = _bad_signature(user.authenticator.get(options, sign_count=1))
    assert_problem(await verify(api, mfa_token, user.factor_id, forged), 401, "invalid_code")
    alarms = [e for e in await events_of(api, user.id) if e["type"] == "webauthn.clone_detected"]
    assert len(alarms) == 2


async def test_an_authenticator_without_a_count_signs_in_again_and_again(api: Api) -> None:
    user = await passkey_user(api, "pknocount", counts=False)
    for _ in range(2):
        mfa_token, options = await second_step(api, user)
        r = await verify(api, mfa_token, user.factor_id, user.authenticator.get(options))
        assert_authenticated(r)
    for _ in range(2):
        await passkey_sign_in(api, user)


# --- passwordless ------------------------------------------------------------------------------


async def passkey_sign_in(api: Api, user: PasskeyUser) -> dict[str, Any]:
    options = await passkey_options(api)
    credential = user.authenticator.get(options["public_key"])
    return assert_authenticated(await passkey_verify(api, options["challenge_id"], credential))


async def test_passwordless_options_are_discoverable_and_ready_for_autofill(api: Api) -> None:
    body = await passkey_options(api)
    options = body["public_key"]
    assert set(body) == {"challenge_id", "public_key"}
    assert options.get("allowCredentials", []) == []
    assert options["userVerification"] == "required"
    assert options["rpId"] == "localhost"
    assert decoded_length(options["challenge"]) >= 16
    assert body["challenge_id"] != (await passkey_options(api))["challenge_id"]


async def test_passwordless_sign_in_with_a_passkey(api: Api) -> None:
    user = await passkey_user(api, "pkless")
    tokens = await passkey_sign_in(api, user)
    token = claims(tokens["access_token"])
    assert token["sub"] == user.id
    assert token["amr"] == ["hwk", "user", "mfa"]
    assert token["acr"] == "phr"
    # A session that verified a passkey satisfies step-up: it may replace recovery codes
    r = await api.client.post("/api/v1/me/recovery-codes", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200, r.text


async def test_passwordless_refuses_bad_answers(api: Api) -> None:
    user = await passkey_user(api, "pklessbad")
    other = await passkey_user(api, "pklessother")
    auth = user.authenticator
    cases = {
        "another origin": lambda o: auth.get(o, origin="https://evil.example"),
        "another rp id hash": lambda o: auth.get(o, rp_id="evil.example"),
        "no user presence": lambda o: auth.get(o, flags=UV),
        "no user verification": lambda o: auth.get(o, flags=UP),
        "an unknown credential": _unknown_assertion,
        "another account's user handle": lambda o: auth.get(o, user_handle=_handle_of(other)),
        "no user handle": lambda o: _without_user_handle(auth.get(o)),
        "a bad signature": lambda o: _bad_signature(auth.get(o)),
        "another challenge": lambda o: auth.get(o, challenge=b64url(b"y" * 32)),
        "malformed": lambda o: {"id": "abc", "rawId": "abc", "response": {"x": 1}},
    }
    for name, make in cases.items():
        options = await passkey_options(api)
        r = await passkey_verify(api, options["challenge_id"], make(options["public_key"]))
        assert r.status_code == 401, (name, r.text)
        assert_problem(r, 401, "invalid_code")
    # Not an object: a malformed request
    options = await passkey_options(api)
    r = await passkey_verify(api, options["challenge_id"], [1, 2])
    assert_problem(r, 422, "validation_error")
    r = await api.client.post("/api/v1/auth/passkey/verify", json={"credential": {}})
    assert_problem(r, 422, "validation_error")
    # Refusals counted against the account; a good sign-in clears them
    await passkey_sign_in(api, user)


def _handle_of(user: PasskeyUser) -> bytes:
    [credential] = user.authenticator.credentials.values()
    return credential.user_handle


def _without_user_handle(credential: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(credential)
    del stripped["response"]["userHandle"]
    return stripped


async def test_a_passwordless_challenge_is_single_use_and_expires(api: Api) -> None:
    user = await passkey_user(api, "pklessreplay")
    options = await passkey_options(api)
    assertion = user.authenticator.get(options["public_key"])
    assert_authenticated(await passkey_verify(api, options["challenge_id"], assertion))
    # Replayed: the challenge is gone
    r = await passkey_verify(api, options["challenge_id"], assertion)
    assert_problem(r, 401, "invalid_code")
    # A failed answer uses the challenge up too
    options = await passkey_options(api)
    bad = user.authenticator.get(options["public_key"], origin="https://evil.example")
    assert_problem(await passkey_verify(api, options["challenge_id"], bad), 401, "invalid_code")
    good = user.authenticator.get(options["public_key"])
    assert_problem(await passkey_verify(api, options["challenge_id"], good), 401, "invalid_code")
    # Expired (its key gone from the store, as after its time), and never issued
    options = await passkey_options(api)
    await _expire_challenge(api, options["challenge_id"])
    good = user.authenticator.get(options["public_key"])
    assert_problem(await passkey_verify(api, options["challenge_id"], good), 401, "invalid_code")
    r = await passkey_verify(api, "made-up", good)
    assert_problem(r, 401, "invalid_code")


async def _expire_challenge(api: Api, challenge_id: str) -> None:
    from cloudmfa.flows.passwordless import _key

    await api.svc.ephemeral.delete(_key(challenge_id))


async def test_passwordless_refuses_a_locked_account(api: Api) -> None:
    user = await passkey_user(api, "pklocked")
    async with api.svc.engine.begin() as conn:
        await user_repo.set_locked(conn, user.id, api.clock.now(), api.clock.now())
    options = await passkey_options(api)
    r = await passkey_verify(
        api, options["challenge_id"], user.authenticator.get(options["public_key"])
    )
    assert_problem(r, 403, "account_locked")


async def test_passwordless_failures_count_against_the_account(api: Api) -> None:
    user = await passkey_user(api, "pkthrottle")
    limit = api.svc.settings.login_max_failures
    for _ in range(limit):
        options = await passkey_options(api)
        bad = user.authenticator.get(options["public_key"], flags=UP)  # no user verification
        assert_problem(await passkey_verify(api, options["challenge_id"], bad), 401, "invalid_code")
    options = await passkey_options(api)
    good = user.authenticator.get(options["public_key"])
    r = await passkey_verify(api, options["challenge_id"], good)
    assert_problem(r, 429, "rate_limited")
    assert "retry-after" in r.headers
    # ... and the password step is refused as well: one count per account
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": "plum-orbit-velvet-canyon-42"}
    )
    assert_problem(r, 429, "rate_limited")
    await api.svc.throttle.reset(user.email)


async def test_a_clone_is_caught_in_passwordless_sign_in_too(api: Api) -> None:
    user = await passkey_user(api, "pklessclone")
    options = await passkey_options(api)
    credential = user.authenticator.get(options["public_key"], sign_count=50)
    assert_authenticated(await passkey_verify(api, options["challenge_id"], credential))
    options = await passkey_options(api)
    credential = user.authenticator.get(options["public_key"], sign_count=49)
    assert_problem(
        await passkey_verify(api, options["challenge_id"], credential), 401, "invalid_code"
    )
    types = [e["type"] for e in await events_of(api, user.id)]
    assert "webauthn.clone_detected" in types


# --- managing passkeys -------------------------------------------------------------------------


async def test_rename_and_remove_follow_the_step_up_rules(api: Api) -> None:
    user = await passkey_user(api, "pkmanage")
    # A passkey session older than the step-up window (refreshed: it keeps its auth_time)
    stale = await passkey_sign_in(api, user)
    api.clock.advance(seconds=api.svc.settings.reauth_window_s + 1)
    # The access token itself expired too; a refreshed one keeps the old auth_time
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": stale["refresh_token"]}
    )
    old = bearer(r.json()["access_token"])
    r = await api.client.patch(
        f"/api/v1/me/factors/{user.factor_id}", json={"label": "Old"}, headers=old
    )
    assert_problem(r, 403, "reauthentication_required")
    assert_problem(
        await api.client.delete(f"/api/v1/me/factors/{user.factor_id}", headers=old),
        403,
        "reauthentication_required",
    )

    fresh = bearer((await passkey_sign_in(api, user))["access_token"])
    r = await api.client.patch(
        f"/api/v1/me/factors/{user.factor_id}", json={"label": "MacBook"}, headers=fresh
    )
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "MacBook" and r.json()["authenticator"] == "iCloud Keychain"
    r = await api.client.patch(
        f"/api/v1/me/factors/{user.factor_id}", json={"label": ""}, headers=fresh
    )
    assert_problem(r, 422, "validation_error")
    r = await api.client.delete(f"/api/v1/me/factors/{user.factor_id}", headers=fresh)
    assert r.status_code == 204
    # Removed: it signs in no more
    options = await passkey_options(api)
    r = await passkey_verify(
        api, options["challenge_id"], user.authenticator.get(options["public_key"])
    )
    assert_problem(r, 401, "invalid_code")


async def test_another_users_factor_cannot_be_renamed(api: Api) -> None:
    owner = await passkey_user(api, "pkowner")
    intruder = await passkey_user(api, "pkintruder")
    headers = bearer((await passkey_sign_in(api, intruder))["access_token"])
    r = await api.client.patch(
        f"/api/v1/me/factors/{owner.factor_id}", json={"label": "Mine"}, headers=headers
    )
    assert_problem(r, 404, "not_found")


async def test_audit_details_name_no_credential_material(api: Api) -> None:
    user = await passkey_user(api, "pkaudit")
    await passkey_sign_in(api, user)
    text = json.dumps(await events_of(api, user.id), default=str)
    [credential] = user.authenticator.credentials.values()
    assert b64url(credential.id) not in text
    assert base64.b64encode(credential.cose_public_key()).decode()[:20] not in text


async def test_a_count_moved_on_after_the_password_step_still_refuses_a_lower_one(
    api: Api,
) -> None:
    """The attempt carries the factor as the password step read it; the claim re-checks the
    count in the database, so a use in between is never undone by an older count or a 0."""
    user = await passkey_user(api, "pksnapshot")
    mfa_token, options = await second_step(api, user)  # the snapshot: count 0
    await passkey_sign_in(api, user)  # count 1 now
    moved_on = [user.authenticator.get(options, sign_count=n) for n in (1, 0)]
    [credential] = user.authenticator.credentials.values()
    credential.sign_count = 1
    for assertion in moved_on:
        r = await verify(api, mfa_token, user.factor_id, assertion)
        assert_problem(r, 401, "invalid_code")
    r = await verify(api, mfa_token, user.factor_id, user.authenticator.get(options))
    assert claims(assert_authenticated(r)["access_token"])["amr"][-1] == "mfa"


async def test_a_locked_account_is_told_only_to_the_holder_of_its_passkey(api: Api) -> None:
    user = await passkey_user(api, "pklockedforged")
    async with api.svc.engine.begin() as conn:
        await user_repo.set_locked(conn, user.id, api.clock.now(), api.clock.now())
    options = await passkey_options(api)
    forged = _bad_signature(user.authenticator.get(options["public_key"]))
    assert_problem(await passkey_verify(api, options["challenge_id"], forged), 401, "invalid_code")


async def test_two_sign_ins_racing_on_one_challenge_open_one_session(api: Api) -> None:
    user = await passkey_user(api, "pkrace", counts=False)  # the count cannot break the tie
    options = await passkey_options(api)
    assertion = user.authenticator.get(options["public_key"])
    answers = await asyncio.gather(
        *(passkey_verify(api, options["challenge_id"], assertion) for _ in range(4))
    )
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401]


async def test_without_the_webauthn_type_passkey_sign_in_is_not_offered(
    backend: dict[str, Any],
) -> None:
    settings = conftest.test_settings(backend, enabled_factors="totp,recovery")
    app, off = await start_api(settings)
    async with app.router.lifespan_context(app), off.client:
        r = await off.client.post("/api/v1/auth/passkey/options", json={})
        assert_problem(r, 422, "validation_error")
        _, headers = await off.signed_in("pkoff")
        r = await off.client.post("/api/v1/me/factors", json={"type": "webauthn"}, headers=headers)
        assert_problem(r, 422, "validation_error")

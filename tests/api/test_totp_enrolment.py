"""Enrolling and activating an authenticator app (API.md "The signed-in user and their factors",
"Step-up", "Accounts" (MFA policy), "Audit events").

TOTP codes are always computed from the secret the enrolment returned and the app's frozen
clock; each time step works once per factor, so the clock moves 30 s between uses.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pyotp
import segno
from sqlalchemy import select

from cloudmfa.factors.totp.enrol import qr_svg
from cloudmfa.store.audit import list_events
from cloudmfa.store.models import factors as factors_table
from conftest import ALL_BACKENDS, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import assert_problem

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

FACTOR_KEYS = {"id", "type", "label", "status", "created_at", "last_used_at"}
ENROL_KEYS = {"id", "type", "status", "secret", "otpauth_uri", "qr_svg"}
BASE32_160_BITS = re.compile(r"^[A-Z2-7]{32}$")
RECOVERY_CODE = re.compile(r"^[A-Z0-9]{4}(-[A-Z0-9]{4}){4}$")


def code_now(api: Api, secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(api.clock.now(), counter_offset=offset_steps)


def next_code(api: Api, secret: str) -> str:
    """Move to the next time step (each step is accepted once per factor) and read the app."""
    api.clock.advance(seconds=30)
    return code_now(api, secret)


def svg_dark_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules (column, row) of a segno SVG, read back from its path, quiet zone off."""
    [path] = re.findall(r'<path[^>]*\sd="([^"]+)"', svg)
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for cmd, a, b in re.findall(r"([MmHhVv])\s*(-?[\d.]+)(?:[ ,](-?[\d.]+))?", path):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        elif cmd == "h":
            dark.update((int(x) + i, int(y)) for i in range(int(float(a))))
            x += float(a)
        else:
            raise AssertionError(f"unexpected path command {cmd!r}")
    left = min(c for c, _ in dark)  # the top-left finder pattern starts the symbol
    top = min(r for _, r in dark)
    return {(c - left, r - top) for c, r in dark}


def qr_dark_modules(content: str, error: str) -> set[tuple[int, int]]:
    qr = segno.make(content, error=error, micro=False, boost_error=False)
    return {(c, r) for r, row in enumerate(qr.matrix) for c, v in enumerate(row) if v}


async def enrol(api: Api, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await api.client.post(
        "/api/v1/me/factors", json={"type": "totp", **body}, headers=headers
    )


async def enrol_ok(api: Api, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await enrol(api, headers, **body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def activate(api: Api, headers: dict[str, str], factor_id: str, code: str) -> httpx.Response:
    return await api.client.post(
        f"/api/v1/me/factors/{factor_id}/activate", json={"code": code}, headers=headers
    )


async def list_factors(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await api.client.get("/api/v1/me/factors", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["factors"])


async def with_active_totp(
    api: Api, tag: str = "totp"
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """A new account signed in with a password only, with one active TOTP factor."""
    user, headers = await api.signed_in(tag)
    factor = await enrol_ok(api, headers)
    r = await activate(api, headers, factor["id"], code_now(api, factor["secret"]))
    assert r.status_code == 200, r.text
    return user, headers, {**factor, **r.json()}


async def mfa_sign_in(api: Api, email: str, factor_id: str, secret: str) -> dict[str, Any]:
    start = await api.login(email)
    assert start["status"] == "mfa_required", start
    r = await api.client.post(
        "/api/v1/auth/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": factor_id,
            "code": next_code(api, secret),
        },
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def user_events(api: Api, user_id: str) -> list[dict[str, Any]]:
    async with api.svc.engine.connect() as conn:
        return await list_events(conn, user_id=user_id, limit=500)


# --- starting an enrolment ------------------------------------------------------------------


async def test_totp_enrolment_returns_pending_factor_with_secret_uri_and_qr(api: Api) -> None:
    user, headers = await api.signed_in("enrol")

    r = await enrol(api, headers)

    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert ENROL_KEYS <= set(body), body
    assert body["type"] == "totp"
    assert body["status"] == "pending"
    assert isinstance(body["id"], str) and body["id"]
    secret = body["secret"]
    assert BASE32_160_BITS.match(secret), secret
    assert len(base64.b32decode(secret)) == 20  # 160 bits
    assert body["otpauth_uri"] == (
        f"otpauth://totp/cloudmfa:{user['email']}?secret={secret}"
        "&issuer=cloudmfa&algorithm=SHA1&digits=6&period=30"
    )
    # The QR code is the segno rendering of exactly that URI.
    assert body["qr_svg"] == qr_svg(body["otpauth_uri"])
    svg = body["qr_svg"].strip()
    assert svg.startswith("<svg") and svg.endswith("</svg>"), svg[:80]
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg


async def test_totp_qr_code_encodes_exactly_the_otpauth_uri(api: Api) -> None:
    """Read independently of the service's renderer: the symbol drawn is a QR code of the URI."""
    _, headers = await api.signed_in("qr")
    body = await enrol_ok(api, headers)

    drawn = svg_dark_modules(body["qr_svg"])

    assert any(drawn == qr_dark_modules(body["otpauth_uri"], level) for level in "LMQH")
    assert not any(
        drawn == qr_dark_modules(body["otpauth_uri"] + "&x=1", level) for level in "LMQH"
    )


async def test_each_totp_enrolment_gets_its_own_secret(api: Api) -> None:
    _, headers = await api.signed_in("twice")
    first = await enrol_ok(api, headers)
    second = await enrol_ok(api, headers)
    assert first["id"] != second["id"]
    assert first["secret"] != second["secret"]


async def test_totp_enrolment_label_is_optional_and_listed(api: Api) -> None:
    _, headers = await api.signed_in("label")
    labelled = await enrol_ok(api, headers, label="Work phone")
    unlabelled = await enrol_ok(api, headers)

    listed = {f["id"]: f for f in await list_factors(api, headers)}

    assert listed[labelled["id"]]["label"] == "Work phone"
    assert unlabelled["id"] in listed


async def test_pending_factor_is_listed_without_any_secret(api: Api) -> None:
    _, headers = await api.signed_in("list")
    factor = await enrol_ok(api, headers, label="Phone")

    r = await api.client.get("/api/v1/me/factors", headers=headers)

    assert r.status_code == 200, r.text
    listed = r.json()["factors"]
    assert len(listed) == 1
    entry = listed[0]
    assert set(entry) == FACTOR_KEYS
    assert entry["id"] == factor["id"]
    assert entry["type"] == "totp"
    assert entry["status"] == "pending"
    assert entry["label"] == "Phone"
    assert entry["last_used_at"] is None
    assert factor["secret"] not in r.text
    assert "otpauth" not in r.text
    assert "<svg" not in r.text


async def test_unknown_factor_type_is_validation_error(api: Api) -> None:
    _, headers = await api.signed_in("unknown")
    for body in ({"type": "carrier-pigeon"}, {"type": ""}, {}, {"type": 7}):
        r = await api.client.post("/api/v1/me/factors", json=body, headers=headers)
        assert_problem(r, 422, "validation_error")
    r = await api.client.get("/api/v1/me/factors", headers=headers)
    assert r.json()["factors"] == []


async def test_totp_enrolment_needs_a_session(api: Api) -> None:
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"})
    assert_problem(r, 401, "invalid_token")


async def test_totp_secret_is_stored_encrypted(api: Api) -> None:
    _, headers = await api.signed_in("atrest")
    factor = await enrol_ok(api, headers)

    async with api.svc.engine.connect() as conn:
        row = (
            await conn.execute(select(factors_table).where(factors_table.c.id == factor["id"]))
        ).one()

    stored = bytes(row.secret)
    assert factor["secret"].encode("ascii") not in stored
    assert base64.b32decode(factor["secret"]) not in stored
    assert factor["secret"] not in json.dumps(row.data)
    # It is the secret, encrypted and bound to its row.
    assert api.svc.secretbox.decrypt(stored, context=factor["id"]) == factor["secret"].encode(
        "ascii"
    )


# --- activation -----------------------------------------------------------------------------


async def test_activation_with_a_wrong_code_is_invalid_code_and_stays_pending(api: Api) -> None:
    _, headers = await api.signed_in("wrong")
    factor = await enrol_ok(api, headers)
    right = code_now(api, factor["secret"])
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    for code in (wrong, "abcdef", "12345", right + "0"):
        assert_problem(await activate(api, headers, factor["id"], code), 401, "invalid_code")

    [entry] = await list_factors(api, headers)
    assert entry["status"] == "pending"
    me = await api.client.get("/api/v1/me", headers=headers)
    assert me.json()["mfa_enabled"] is False


async def test_activation_with_the_right_code_returns_ten_unique_recovery_codes(api: Api) -> None:
    _, headers = await api.signed_in("activate")
    factor = await enrol_ok(api, headers)

    r = await activate(api, headers, factor["id"], code_now(api, factor["secret"]))

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == factor["id"]
    assert body["type"] == "totp"
    assert body["status"] == "active"
    codes = body["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert RECOVERY_CODE.match(code), code
    assert "secret" not in body
    [entry] = await list_factors(api, headers)
    assert entry["status"] == "active"
    me = await api.client.get("/api/v1/me", headers=headers)
    assert me.json()["mfa_enabled"] is True


async def test_activation_of_an_unknown_or_foreign_factor_is_not_found(api: Api) -> None:
    _, headers = await api.signed_in("owner")
    factor = await enrol_ok(api, headers)
    _, other = await api.signed_in("other")
    code = code_now(api, factor["secret"])

    assert_problem(await activate(api, other, factor["id"], code), 404, "not_found")
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_problem(await activate(api, headers, unknown, code), 404, "not_found")
    # The owner's pending factor is untouched and still activates.
    assert (await activate(api, headers, factor["id"], code)).status_code == 200


async def test_second_factor_activation_returns_no_recovery_codes(api: Api) -> None:
    user, _, first = await with_active_totp(api, "second")
    tokens = await mfa_sign_in(api, user["email"], first["id"], first["secret"])
    headers = bearer(tokens["access_token"])
    second = await enrol_ok(api, headers, label="Backup phone")

    r = await activate(api, headers, second["id"], code_now(api, second["secret"]))

    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
    assert "recovery_codes" not in r.json()
    assert {f["id"]: f["status"] for f in await list_factors(api, headers)} == {
        first["id"]: "active",
        second["id"]: "active",
    }
    # The first set still stands: one of its codes signs in.
    start = await api.login(user["email"])
    r = await api.client.post(
        "/api/v1/auth/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": "recovery",
            "code": first["recovery_codes"][0],
        },
    )
    assert r.status_code == 200, r.text


async def test_activation_code_cannot_be_replayed_at_login(api: Api) -> None:
    user, _, factor = await with_active_totp(api, "replay")
    used = code_now(api, factor["secret"])  # the step the activation just consumed

    start = await api.login(user["email"])
    assert start["status"] == "mfa_required"
    r = await api.client.post(
        "/api/v1/auth/verify",
        json={"mfa_token": start["mfa_token"], "factor_id": factor["id"], "code": used},
    )
    assert_problem(r, 401, "invalid_code")

    r = await api.client.post(
        "/api/v1/auth/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": factor["id"],
            "code": next_code(api, factor["secret"]),
        },
    )
    assert r.status_code == 200, r.text


# --- step-up for further factors ------------------------------------------------------------


async def test_second_enrolment_from_password_only_session_needs_reauthentication(api: Api) -> None:
    _, headers, _ = await with_active_totp(api, "stepup")  # headers: the password-only session

    r = await enrol(api, headers)

    assert_problem(r, 403, "reauthentication_required")
    assert len(await list_factors(api, headers)) == 1


async def test_second_enrolment_from_a_fresh_mfa_session_is_allowed(api: Api) -> None:
    user, _, factor = await with_active_totp(api, "fresh")
    tokens = await mfa_sign_in(api, user["email"], factor["id"], factor["secret"])

    r = await enrol(api, bearer(tokens["access_token"]), label="Tablet")

    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"


async def test_second_enrolment_from_an_old_mfa_session_needs_reauthentication(api: Api) -> None:
    user, _, factor = await with_active_totp(api, "stale")
    tokens = await mfa_sign_in(api, user["email"], factor["id"], factor["secret"])
    api.clock.advance(minutes=11)
    r = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert r.status_code == 200, r.text

    r = await enrol(api, bearer(r.json()["access_token"]))

    assert_problem(r, 403, "reauthentication_required")


async def test_pending_factor_from_before_the_first_activation_still_needs_step_up(
    api: Api,
) -> None:
    """Adding a factor while one is active needs step-up, also when it was enrolled earlier."""
    user, headers = await api.signed_in("early")
    first = await enrol_ok(api, headers)
    early = await enrol_ok(api, headers)  # both pending: no step-up needed yet
    r = await activate(api, headers, first["id"], code_now(api, first["secret"]))
    assert r.status_code == 200, r.text

    r = await activate(api, headers, early["id"], code_now(api, early["secret"]))

    assert_problem(r, 403, "reauthentication_required")
    statuses = {f["id"]: f["status"] for f in await list_factors(api, headers)}
    assert statuses == {first["id"]: "active", early["id"]: "pending"}
    # A freshly MFA-verified session may activate it.
    tokens = await mfa_sign_in(api, user["email"], first["id"], first["secret"])
    r = await activate(
        api, bearer(tokens["access_token"]), early["id"], code_now(api, early["secret"])
    )
    assert r.status_code == 200, r.text


# --- the required MFA policy ----------------------------------------------------------------


async def test_required_policy_lets_a_confined_session_enrol_and_activate_its_first_factor(
    backend: dict[str, Any],
) -> None:
    app, api = await start_api(make_settings(backend, mfa_policy="required"))
    async with app.router.lifespan_context(app), api.client:
        account = await api.sign_up()
        body = await api.login(account["email"])
        assert body["status"] == "authenticated"
        assert body["mfa_enrollment_required"] is True
        headers = bearer(body["access_token"])

        factor = await enrol_ok(api, headers)
        assert factor["status"] == "pending"
        # Listing factors is none of the calls the confined session may make.
        assert_problem(
            await api.client.get("/api/v1/me/factors", headers=headers),
            403,
            "mfa_enrollment_required",
        )

        r = await activate(api, headers, factor["id"], code_now(api, factor["secret"]))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "active"
        assert len(r.json()["recovery_codes"]) == 10

        # Activating did not upgrade this password-only session: it stays confined until a
        # sign-in with the factor (API.md "MFA policy").
        listed = await api.client.get("/api/v1/me/factors", headers=headers)
        assert_problem(listed, 403, "reauthentication_required")
        r = await api.client.post("/api/v1/me/recovery-codes", headers=headers)
        assert_problem(r, 403, "reauthentication_required")
        assert_problem(await enrol(api, headers), 403, "reauthentication_required")
        # The next login asks for the factor.
        again = await api.login(account["email"])
        assert again["status"] == "mfa_required"
        assert "mfa_enrollment_required" not in again


async def test_enabled_factors_without_recovery_issue_no_recovery_codes(
    backend: dict[str, Any],
) -> None:
    app, api = await start_api(make_settings(backend, enabled_factors="totp"))
    async with app.router.lifespan_context(app), api.client:
        user, headers = await api.signed_in("norec")
        factor = await enrol_ok(api, headers)
        r = await activate(api, headers, factor["id"], code_now(api, factor["secret"]))
        assert r.status_code == 200, r.text
        assert "recovery_codes" not in r.json()

        start = await api.login(user["email"])
        assert start["status"] == "mfa_required"
        assert [(f["id"], f["type"]) for f in start["factors"]] == [(factor["id"], "totp")]


# --- the audit trail ------------------------------------------------------------------------


async def test_enrolment_and_activation_are_audited_without_secrets(api: Api) -> None:
    user, headers = await api.signed_in("audit")
    factor = await enrol_ok(api, headers)
    code = code_now(api, factor["secret"])
    r = await activate(api, headers, factor["id"], code)
    assert r.status_code == 200, r.text
    recovery_codes = r.json()["recovery_codes"]

    events = await user_events(api, user["id"])

    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    for type_ in ("factor.enrolled", "factor.activated", "recovery_codes.generated"):
        assert len(by_type.get(type_, [])) == 1, (type_, [e["type"] for e in events])
        event = by_type[type_][0]
        assert event["actor_id"] == user["id"]
        assert event["subject_id"] == user["id"]
        assert event["outcome"] == "success"
        assert event["ip"] == "127.0.0.1"
    assert by_type["factor.enrolled"][0]["details"]["factor_id"] == factor["id"]
    assert by_type["factor.enrolled"][0]["details"]["factor_type"] == "totp"
    assert by_type["factor.activated"][0]["details"]["factor_id"] == factor["id"]
    assert by_type["recovery_codes.generated"][0]["details"]["count"] == 10
    # Newest first: enrolled, then activated with its codes.
    order = [e["type"] for e in events]
    assert order.index("factor.enrolled") > order.index("factor.activated")

    trail = json.dumps(events, default=str)
    assert factor["secret"] not in trail
    assert factor["otpauth_uri"] not in trail
    assert f'"{code}"' not in trail
    for recovery in recovery_codes:
        assert recovery not in trail
        assert recovery.replace("-", "") not in trail

"""Access and refresh tokens, sessions, logout and signing keys (API.md "Tokens")."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cloudmfa.clock import FrozenClock
from cloudmfa.security.secretbox import SecretKeyError
from cloudmfa.security.tokens import generate_signing_key
from cloudmfa.services import Services
from cloudmfa.store import keys as key_repo
from cloudmfa.store.audit import list_events
from conftest import ALL_BACKENDS, PASSWORD, REDIS_URL, Api, bearer, drop_redis_prefix, start_api
from conftest import test_settings as make_settings
from support import TOKEN_KEYS, assert_problem

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

ISSUER = "http://localhost:8000"  # the public_url of the test settings
AUDIENCE = "cloudmfa"


def assert_invalid_token(r: httpx.Response) -> None:
    assert_problem(r, 401, "invalid_token")
    assert r.headers["www-authenticate"].startswith("Bearer")


def assert_token_set(body: dict[str, Any]) -> None:
    assert TOKEN_KEYS <= set(body), body
    assert body["status"] == "authenticated"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    for key in ("access_token", "refresh_token", "session_id"):
        assert isinstance(body[key], str) and body[key]


async def me(api: Api, access_token: str) -> httpx.Response:
    return await api.client.get("/api/v1/me", headers=bearer(access_token))


async def refresh(api: Api, refresh_token: str) -> httpx.Response:
    return await api.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


async def jwks(api: Api) -> dict[str, Any]:
    r = await api.client.get("/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    return dict(r.json())


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def verify_with_jwks(token: str, key_set: dict[str, Any]) -> dict[str, Any]:
    """Verify as a relying party would: only the published public key, ES256, iss and aud.

    Expiry is checked by the tests against the service's (frozen) clock, not the wall clock.
    """
    header = jwt.get_unverified_header(token)
    matches = [k for k in key_set["keys"] if k.get("kid") == header["kid"]]
    assert len(matches) == 1, (header, key_set)
    key = jwt.PyJWK(matches[0], algorithm="ES256")
    return dict(
        jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    )


# --- the access token -------------------------------------------------------------------


async def test_access_token_verifies_against_jwks_with_the_documented_claims(api: Api) -> None:
    account, _ = await api.signed_in("claims")
    token = account["access_token"]
    key_set = await jwks(api)
    assert key_set["keys"], key_set
    for jwk in key_set["keys"]:
        assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
        assert "d" not in jwk  # the private half is never published

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert isinstance(header.get("kid"), str) and header["kid"]

    claims = verify_with_jwks(token, key_set)
    now = int(api.clock.now().timestamp())
    assert claims["iss"] == ISSUER
    assert claims["aud"] in (AUDIENCE, [AUDIENCE])
    assert claims["sub"] == account["id"]
    assert claims["sid"] == account["session_id"]
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["iat"] == now
    assert claims["exp"] == claims["iat"] + 600
    assert claims["auth_time"] == now
    assert claims["amr"] == ["pwd"]
    assert "acr" not in claims


async def test_sessions_and_audit_events_take_time_ordered_ids(api: Api) -> None:
    # store/ids.py: new rows land on an index's last pages. Two sign-ins, one after the other.
    account = await api.sign_up()
    first = await api.login(account["email"])
    second = await api.login(account["email"])
    assert uuid.UUID(first["session_id"]).version == 7
    assert first["session_id"] < second["session_id"]
    async with api.svc.reader.connect() as conn:
        events = await list_events(conn, user_id=account["id"])
    assert events and {uuid.UUID(event["id"]).version for event in events} == {7}


async def test_access_token_is_refused_once_signature_is_tampered(api: Api) -> None:
    account, _ = await api.signed_in("tamper")
    head, payload, signature = account["access_token"].split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(jwt.InvalidSignatureError):
        verify_with_jwks(f"{head}.{payload}.{flipped}", await jwks(api))
    assert_invalid_token(await me(api, f"{head}.{payload}.{flipped}"))


async def test_each_token_has_its_own_jti(api: Api) -> None:
    account = await api.sign_up()
    first = await api.login(account["email"])
    second = await api.login(account["email"])
    key_set = await jwks(api)
    jti_1 = verify_with_jwks(first["access_token"], key_set)["jti"]
    jti_2 = verify_with_jwks(second["access_token"], key_set)["jti"]
    assert jti_1 != jti_2


async def test_access_token_expires_after_ten_minutes(api: Api) -> None:
    account, headers = await api.signed_in("expiry")
    assert (await api.client.get("/api/v1/me", headers=headers)).status_code == 200
    api.clock.advance(seconds=599)
    r = await api.client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200, r.text
    api.clock.advance(seconds=1)
    assert_invalid_token(await api.client.get("/api/v1/me", headers=headers))
    # The session itself lives on: its refresh token still gives a fresh access token.
    r = await refresh(api, account["refresh_token"])
    assert r.status_code == 200, r.text
    assert (await me(api, r.json()["access_token"])).status_code == 200


# --- refresh ----------------------------------------------------------------------------


async def test_refresh_returns_new_token_set_for_the_same_session(api: Api) -> None:
    account, _ = await api.signed_in("refresh")
    api.clock.advance(minutes=1)
    r = await refresh(api, account["refresh_token"])
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers["cache-control"]
    body = r.json()
    assert_token_set(body)
    assert body["session_id"] == account["session_id"]
    assert body["refresh_token"] != account["refresh_token"]
    assert body["access_token"] != account["access_token"]
    claims = verify_with_jwks(body["access_token"], await jwks(api))
    assert claims["sid"] == account["session_id"]
    assert claims["sub"] == account["id"]
    # auth_time stays the time of the sign-in, not of the refresh.
    first = verify_with_jwks(account["access_token"], await jwks(api))
    assert claims["auth_time"] == first["auth_time"]
    assert claims["iat"] == first["iat"] + 60
    r = await me(api, body["access_token"])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == account["id"]


@pytest.mark.parametrize("token", ["not-a-refresh-token", "x" * 43])
async def test_unknown_refresh_token_is_invalid_token(api: Api, token: str) -> None:
    assert_invalid_token(await refresh(api, token))


async def test_reused_refresh_token_revokes_the_whole_session(api: Api) -> None:
    account, _ = await api.signed_in("reuse")
    other = await api.login(account["email"])  # another session of the same user
    r = await refresh(api, account["refresh_token"])
    assert r.status_code == 200, r.text
    newest = r.json()
    assert (await me(api, newest["access_token"])).status_code == 200

    # The spent token comes back (a thief, or the victim after a theft).
    assert_invalid_token(await refresh(api, account["refresh_token"]))

    # Everything the session issued is now refused ...
    assert_invalid_token(await me(api, newest["access_token"]))
    assert_invalid_token(await me(api, account["access_token"]))
    assert_invalid_token(await refresh(api, newest["refresh_token"]))
    # ... but the user's other session is not that session.
    assert (await me(api, other["access_token"])).status_code == 200

    async with api.svc.engine.connect() as conn:
        events = await list_events(conn, user_id=account["id"], type_="token.reuse_detected")
    assert len(events) == 1
    assert events[0]["details"]["session_id"] == account["session_id"]
    assert events[0]["subject_id"] == account["id"]
    trail = json.dumps(events, default=str)
    for secret in (account["refresh_token"], newest["refresh_token"], newest["access_token"]):
        assert secret not in trail


async def test_session_ends_after_an_hour_without_refresh(api: Api) -> None:
    account = await api.sign_up()
    kept = await api.login(account["email"])
    idle = await api.login(account["email"])

    api.clock.advance(minutes=59)
    r = await refresh(api, kept["refresh_token"])
    assert r.status_code == 200, r.text
    kept_refresh = r.json()["refresh_token"]

    api.clock.advance(minutes=2)  # 61 minutes since the idle session was last used
    assert_invalid_token(await refresh(api, idle["refresh_token"]))
    r = await refresh(api, kept_refresh)  # only 2 minutes idle
    assert r.status_code == 200, r.text
    assert r.json()["session_id"] == kept["session_id"]


async def test_session_ends_after_24_hours_however_active(api: Api) -> None:
    account, _ = await api.signed_in("absolute")
    token = account["refresh_token"]
    for _ in range(28):  # every 50 minutes, up to 23 h 20 min
        api.clock.advance(minutes=50)
        r = await refresh(api, token)
        assert r.status_code == 200, r.text
        assert r.json()["session_id"] == account["session_id"]
        token = r.json()["refresh_token"]
    api.clock.advance(minutes=50)  # 24 h 10 min after the sign-in
    assert_invalid_token(await refresh(api, token))


# --- logout -----------------------------------------------------------------------------


async def test_logout_refuses_the_sessions_tokens(api: Api) -> None:
    account, headers = await api.signed_in("logout")
    other = await api.login(account["email"])

    r = await api.client.post("/api/v1/auth/logout", headers=headers)
    assert r.status_code == 204, r.text
    assert r.content == b""

    assert_invalid_token(await api.client.get("/api/v1/me", headers=headers))
    assert_invalid_token(await refresh(api, account["refresh_token"]))
    assert_invalid_token(await api.client.post("/api/v1/auth/logout", headers=headers))
    # Only that session ended.
    assert (await me(api, other["access_token"])).status_code == 200
    r = await refresh(api, other["refresh_token"])
    assert r.status_code == 200, r.text


async def test_logout_needs_an_access_token(api: Api) -> None:
    assert_invalid_token(await api.client.post("/api/v1/auth/logout"))


async def test_revoked_session_stays_refused_after_a_restart(
    api: Api, backend: dict[str, Any]
) -> None:
    account, headers = await api.signed_in("restart")
    survivor = await api.login(account["email"])
    assert (await api.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204

    # A new process on the same database (and, on that backend, the same Redis).
    app, fresh = await start_api(make_settings(backend), clock=FrozenClock(api.clock.now()))
    async with app.router.lifespan_context(app), fresh.client:
        assert fresh.svc is not api.svc
        assert_invalid_token(await fresh.client.get("/api/v1/me", headers=headers))
        r = await fresh.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account["refresh_token"]}
        )
        assert_invalid_token(r)
        # The signing key and the other session survived the restart.
        r = await fresh.client.get("/api/v1/me", headers=bearer(survivor["access_token"]))
        assert r.status_code == 200, r.text


async def test_logout_is_seen_by_every_replica(api: Api, backend: dict[str, Any]) -> None:
    """Two replicas on one database and one Redis (the in-process store serves a single
    process, so on the SQLite backend both replicas get a Redis of their own to share)."""
    shared = dict(backend)
    if not shared["redis_url"]:
        shared.update(
            redis_url=REDIS_URL, redis_key_prefix=f"cloudmfa-test-{uuid.uuid4().hex[:8]}:"
        )
    clock = FrozenClock(api.clock.now())
    app_a, first = await start_api(make_settings(shared), clock=clock)
    app_b, second = await start_api(make_settings(shared), clock=clock)
    try:
        async with app_a.router.lifespan_context(app_a), first.client:
            async with app_b.router.lifespan_context(app_b), second.client:
                account, headers = await first.signed_in("replica")
                assert (await second.client.get("/api/v1/me", headers=headers)).status_code == 200
                r = await second.client.post("/api/v1/auth/logout", headers=headers)
                assert r.status_code == 204, r.text
                assert_invalid_token(await second.client.get("/api/v1/me", headers=headers))
                # The first replica never saw the logout request, yet refuses the tokens.
                assert_invalid_token(await first.client.get("/api/v1/me", headers=headers))
                assert_invalid_token(await refresh(first, account["refresh_token"]))
    finally:
        if not backend["redis_url"]:
            await drop_redis_prefix(shared["redis_key_prefix"])


# --- signing keys -----------------------------------------------------------------------


async def rotate_signing_key(api: Api) -> str:
    """What `cloudmfa rotate-signing-key` does, then the reload a replica does on its own."""
    now = api.clock.now()
    key = generate_signing_key(now)
    async with api.svc.engine.begin() as conn:
        await key_repo.retire_active_keys(conn, now)
        await key_repo.insert_key(conn, key, api.svc.secretbox)
    await api.svc.reload_keys()
    return key.kid


async def test_key_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_new_key(
    api: Api,
) -> None:
    before, old_headers = await api.signed_in("rotation")
    old_kid = kid_of(before["access_token"])

    new_kid = await rotate_signing_key(api)
    assert new_kid != old_kid

    key_set = await jwks(api)
    kids = [k["kid"] for k in key_set["keys"]]
    assert old_kid in kids and new_kid in kids

    # Tokens signed before the rotation still work, here and for relying parties.
    assert (await api.client.get("/api/v1/me", headers=old_headers)).status_code == 200
    assert verify_with_jwks(before["access_token"], key_set)["sub"] == before["id"]

    # New tokens, from a login or a refresh, are signed with the new key.
    after = await api.login(before["email"])
    assert kid_of(after["access_token"]) == new_kid
    assert verify_with_jwks(after["access_token"], key_set)["sub"] == before["id"]
    assert (await me(api, after["access_token"])).status_code == 200
    r = await refresh(api, before["refresh_token"])
    assert r.status_code == 200, r.text
    assert kid_of(r.json()["access_token"]) == new_kid


async def test_private_keys_are_stored_sealed_not_as_pem(api: Api) -> None:
    await rotate_signing_key(api)
    async with api.svc.engine.connect() as conn:
        stored = await key_repo.stored_private_keys(conn)

    assert len(stored) >= 2
    for _, private in stored:
        assert "PRIVATE KEY" not in private
        assert key_repo.sealed_under(private) == api.svc.secretbox.current_id


async def test_a_key_stored_as_pem_by_an_older_release_is_sealed_at_start_and_still_signs(
    api: Api,
) -> None:
    before, _ = await api.signed_in("legacykey")
    kid = kid_of(before["access_token"])
    async with api.svc.engine.begin() as conn:
        pem = {k.kid: k.private_key_pem for k in await key_repo.load_keys(conn, api.svc.secretbox)}
        sealed = dict(await key_repo.stored_private_keys(conn))[kid]
        assert await key_repo.replace_private_key(conn, kid, sealed, pem[kid])  # as it was

    await api.svc.ensure_signing_key()  # what every start does
    await api.svc.reload_keys()

    async with api.svc.engine.connect() as conn:
        resealed = dict(await key_repo.stored_private_keys(conn))[kid]
    assert key_repo.sealed_under(resealed) == api.svc.secretbox.current_id
    after, _ = await api.signed_in("legacykey2")
    assert kid_of(after["access_token"]) == kid
    assert (await me(api, after["access_token"])).status_code == 200
    assert (await me(api, before["access_token"])).status_code == 200


async def test_a_service_without_the_key_its_signing_keys_are_sealed_with_does_not_start(
    api: Api,
) -> None:
    other_ring = "t9:" + base64.b64encode(bytes(range(32))).decode()
    settings = api.svc.settings.model_copy(update={"secret_keys": other_ring})
    svc = Services.build(settings, clock=api.clock)
    try:
        with pytest.raises(SecretKeyError, match="no key 't1'"):
            await svc.start(migrate=False)
    finally:
        await svc.close()


# --- the Authorization header -----------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    ],
    ids=["missing", "empty", "scheme-only", "scheme-space", "basic", "garbage", "dots", "alg-none"],
)
async def test_missing_or_garbage_authorization_is_invalid_token(
    api: Api, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in (("GET", "/api/v1/me"), ("GET", "/api/v1/me/sessions")):
        r = await api.client.request(method, path, headers=headers)
        assert_invalid_token(r)


async def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    account, _ = await api.signed_in("scheme")
    for scheme in ("bearer", "BEARER"):
        r = await api.client.get(
            "/api/v1/me", headers={"Authorization": f"{scheme} {account['access_token']}"}
        )
        assert r.status_code == 200, r.text


async def test_refresh_token_is_not_an_access_token_and_vice_versa(api: Api) -> None:
    account, _ = await api.signed_in("swap")
    assert_invalid_token(await me(api, account["refresh_token"]))
    assert_invalid_token(await refresh(api, account["access_token"]))
    # Neither mix-up spent or ended anything.
    assert (await me(api, account["access_token"])).status_code == 200
    assert (await refresh(api, account["refresh_token"])).status_code == 200


async def test_access_token_under_another_scheme_is_invalid_token(api: Api) -> None:
    account, _ = await api.signed_in("scheme")
    r = await api.client.get(
        "/api/v1/me", headers={"Authorization": f"Token {account['access_token']}"}
    )
    assert_invalid_token(r)


async def test_token_signed_by_a_foreign_key_with_a_known_kid_is_invalid_token(api: Api) -> None:
    account, _ = await api.signed_in("forged")
    real = jwt.decode(account["access_token"], options={"verify_signature": False})
    forged = jwt.encode(
        real,
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": kid_of(account["access_token"])},
    )
    assert_invalid_token(await me(api, forged))


@pytest.mark.parametrize(
    "change",
    [{"aud": "someone-else"}, {"iss": "https://evil.example"}],
    ids=["audience", "issuer"],
)
async def test_token_for_another_audience_or_issuer_is_invalid_token(
    api: Api, change: dict[str, str]
) -> None:
    account, _ = await api.signed_in("claims")
    claims = jwt.decode(account["access_token"], options={"verify_signature": False})
    # Signed with the service's own key, so only the changed claim can be the reason.
    token = api.svc.tokens.ring.sign({**claims, **change})
    assert_invalid_token(await me(api, token))
    assert (await me(api, api.svc.tokens.ring.sign(claims))).status_code == 200


async def test_login_password_is_not_in_any_token(api: Api) -> None:
    account, _ = await api.signed_in("leak")
    payload = json.dumps(jwt.decode(account["access_token"], options={"verify_signature": False}))
    assert PASSWORD not in payload

"""Browser sessions (docs/sign-in.md "Browser sessions"): with `X-CloudMFA-Session: cookie` the
refresh token and a remembered device travel as HttpOnly cookies, refresh and logout by cookie
need the CSRF header, reuse through the cookie revokes the session, and Bearer clients see no
change. Each test drives its own httpx client, whose cookie jar plays the browser's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest_asyncio

from conftest import Api, bearer, start_api
from conftest import test_settings as settings_for
from support import TOKEN_KEYS, assert_authenticated, assert_problem, mfa_user, verify

COOKIE_MODE = {"X-CloudMFA-Session": "cookie"}
AUTH = "/api/v1/auth"


@pytest_asyncio.fixture(scope="module")
async def site(backend: dict[str, Any]) -> AsyncIterator[tuple[Any, Api]]:
    app, api = await start_api(settings_for(backend))
    async with app.router.lifespan_context(app):
        async with api.client:
            yield app, api


def browser(app: Any) -> httpx.AsyncClient:
    """A client with a cookie jar of its own, as one browser profile."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50001)),
        base_url="http://testserver",
    )


def set_cookies(r: httpx.Response) -> dict[str, Any]:
    """Each Set-Cookie of the answer, by name, as the standard library parses it."""
    found: dict[str, Any] = {}
    for header in r.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        found.update({name: morsel for name, morsel in jar.items()})
    return found


async def cookie_login(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    r = await client.post(
        f"{AUTH}/login",
        json={"email": email, "password": "plum-orbit-velvet-canyon-42"},
        headers=COOKIE_MODE,
    )
    return assert_cookie_tokens(r)


def assert_cookie_tokens(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert TOKEN_KEYS - {"refresh_token"} <= set(body), body
    assert "refresh_token" not in body and "device_token" not in body
    return dict(body)


def csrf_of(client: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies["cloudmfa_csrf"]}


async def test_cookie_login_sets_the_two_cookies_with_their_flags(site: tuple[Any, Api]) -> None:
    app, api = site
    user = await api.sign_up()
    async with browser(app) as client:
        r = await client.post(
            f"{AUTH}/login",
            json={"email": user["email"], "password": user["password"]},
            headers=COOKIE_MODE,
        )
        body = assert_cookie_tokens(r)
        cookies = set_cookies(r)
        refresh, csrf = cookies["cloudmfa_refresh"], cookies["cloudmfa_csrf"]
        assert refresh["httponly"] and refresh["path"] == "/api/v1/auth"
        assert refresh["samesite"] == "strict"
        assert not csrf["httponly"] and csrf["path"] == "/" and csrf["samesite"] == "strict"
        assert len(csrf.value) >= 32 and csrf.value != refresh.value
        # http://localhost is the only public URL whose cookies go without Secure.
        assert not refresh["secure"] and not csrf["secure"]
        # The access token is still a Bearer token in the body.
        me = await client.get("/api/v1/me", headers=bearer(body["access_token"]))
        assert me.status_code == 200
        assert me.json()["email"] == user["email"]


async def test_refresh_with_the_cookie_and_its_csrf_header_rotates_both(
    site: tuple[Any, Api],
) -> None:
    app, api = site
    user = await api.sign_up()
    async with browser(app) as client:
        await cookie_login(client, user["email"])
        first_refresh = client.cookies["cloudmfa_refresh"]
        first_csrf = client.cookies["cloudmfa_csrf"]

        r = await client.post(f"{AUTH}/refresh", headers=csrf_of(client))

        body = assert_cookie_tokens(r)
        assert client.cookies["cloudmfa_refresh"] != first_refresh
        assert client.cookies["cloudmfa_csrf"] != first_csrf
        assert (await client.get("/api/v1/me", headers=bearer(body["access_token"]))).is_success


async def test_cookie_refresh_without_the_right_csrf_header_is_refused(
    site: tuple[Any, Api],
) -> None:
    app, api = site
    user = await api.sign_up()
    async with browser(app) as client:
        await cookie_login(client, user["email"])
        good = client.cookies["cloudmfa_csrf"]
        for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": good[:-1] + "x"}):
            assert_problem(
                await client.post(f"{AUTH}/refresh", headers=headers), 403, "csrf_failed"
            )
            assert_problem(await client.post(f"{AUTH}/logout", headers=headers), 403, "csrf_failed")
        # A forged pair (an attacker's page cannot read the real one, but could try to plant
        # its own csrf cookie): the refused attempts spent nothing, the real pair still works.
        client.cookies.set("cloudmfa_csrf", "planted", path="/")
        r = await client.post(f"{AUTH}/refresh", headers={"X-CSRF-Token": good})
        assert_problem(r, 403, "csrf_failed")
        client.cookies.set("cloudmfa_csrf", good, path="/")
        assert_cookie_tokens(await client.post(f"{AUTH}/refresh", headers={"X-CSRF-Token": good}))


async def test_refresh_or_logout_with_no_cookie_and_no_token_is_invalid_token(
    site: tuple[Any, Api],
) -> None:
    app, _ = site
    async with browser(app) as client:
        assert_problem(await client.post(f"{AUTH}/refresh"), 401, "invalid_token")
        assert_problem(await client.post(f"{AUTH}/logout"), 401, "invalid_token")


async def test_reusing_a_refresh_cookie_revokes_the_session(site: tuple[Any, Api]) -> None:
    app, api = site
    user = await api.sign_up()
    async with browser(app) as client:
        tokens = await cookie_login(client, user["email"])
        stolen = client.cookies["cloudmfa_refresh"]
        r = await client.post(f"{AUTH}/refresh", headers=csrf_of(client))
        newest = assert_cookie_tokens(r)

        # The thief replays the old cookie (with a CSRF pair of its own making).
        async with browser(app) as thief:
            thief.cookies.set("cloudmfa_refresh", stolen, path="/api/v1/auth")
            thief.cookies.set("cloudmfa_csrf", "thief", path="/")
            r = await thief.post(f"{AUTH}/refresh", headers={"X-CSRF-Token": "thief"})
            assert_problem(r, 401, "invalid_token")

        # The whole session is gone: the victim's newest cookie and both access tokens.
        assert_problem(
            await client.post(f"{AUTH}/refresh", headers=csrf_of(client)), 401, "invalid_token"
        )
        for access in (tokens["access_token"], newest["access_token"]):
            me = await client.get("/api/v1/me", headers=bearer(access))
            assert_problem(me, 401, "invalid_token")


async def test_cookie_logout_ends_the_session_and_clears_the_cookies(
    site: tuple[Any, Api],
) -> None:
    app, api = site
    user = await api.sign_up()
    async with browser(app) as client:
        tokens = await cookie_login(client, user["email"])
        refresh = client.cookies["cloudmfa_refresh"]

        r = await client.post(f"{AUTH}/logout", headers=csrf_of(client))

        assert r.status_code == 204, r.text
        cleared = set_cookies(r)
        assert {"cloudmfa_refresh", "cloudmfa_csrf"} <= set(cleared)
        assert all(cleared[name]["max-age"] == "0" for name in cleared)
        assert "cloudmfa_refresh" not in client.cookies and "cloudmfa_csrf" not in client.cookies
        me = await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
        assert_problem(me, 401, "invalid_token")
        r = await api.client.post(f"{AUTH}/refresh", json={"refresh_token": refresh})
        assert_problem(r, 401, "invalid_token")


async def test_bearer_logout_also_clears_a_browsers_cookies(site: tuple[Any, Api]) -> None:
    app, api = site
    user = await api.sign_up()
    async with browser(app) as client:
        tokens = await cookie_login(client, user["email"])
        r = await client.post(f"{AUTH}/logout", headers=bearer(tokens["access_token"]))
        assert r.status_code == 204
        assert "cloudmfa_refresh" not in client.cookies


async def test_a_refresh_token_from_the_body_can_ask_for_cookies(site: tuple[Any, Api]) -> None:
    app, api = site
    user = await api.sign_up()
    tokens = await api.login(user["email"])
    async with browser(app) as client:
        r = await client.post(
            f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=COOKIE_MODE
        )
        assert_cookie_tokens(r)
        assert client.cookies["cloudmfa_refresh"]


async def test_bearer_clients_are_unaffected(site: tuple[Any, Api]) -> None:
    app, api = site
    user = await api.sign_up()
    async with browser(app) as client:
        r = await client.post(
            f"{AUTH}/login", json={"email": user["email"], "password": user["password"]}
        )
        tokens = assert_authenticated(r)
        assert "set-cookie" not in r.headers
        r = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert assert_authenticated(r)["refresh_token"] != tokens["refresh_token"]
        assert "set-cookie" not in r.headers


async def test_verify_in_cookie_mode_remembers_the_device_as_a_cookie(
    site: tuple[Any, Api],
) -> None:
    app, api = site
    user = await mfa_user(api, "cookie-device")
    async with browser(app) as client:
        start = await client.post(
            f"{AUTH}/login",
            json={"email": user.email, "password": "plum-orbit-velvet-canyon-42"},
            headers=COOKIE_MODE,
        )
        assert start.json()["status"] == "mfa_required"
        assert "set-cookie" not in start.headers
        r = await client.post(
            f"{AUTH}/verify",
            json={
                "mfa_token": start.json()["mfa_token"],
                "factor_id": user.factor_id,
                "code": user.next_code(api),
                "remember_device": True,
            },
            headers=COOKIE_MODE,
        )
        assert_cookie_tokens(r)
        device = set_cookies(r)["cloudmfa_device"]
        assert device["httponly"] and device["path"] == "/api/v1/auth"
        assert device["samesite"] == "strict"
        assert int(device["max-age"]) == 30 * 86400

        # The browser sends it back at login by itself: the second factor is skipped.
        again = await cookie_login(client, user.email)
        assert again["status"] == "authenticated"

        # Logout ends the session but keeps the device (it outlives sessions by design).
        await client.post(f"{AUTH}/logout", headers=csrf_of(client))
        assert client.cookies["cloudmfa_device"]

    # Another browser, without the cookie, is asked for the second factor.
    async with browser(app) as other:
        r = await other.post(
            f"{AUTH}/login",
            json={"email": user.email, "password": "plum-orbit-velvet-canyon-42"},
            headers=COOKIE_MODE,
        )
        assert r.json()["status"] == "mfa_required"
    # And a Bearer client's verify is as before: the device token in the body.
    start_json = await api.login(user.email)
    r = await verify(
        api, start_json["mfa_token"], user.factor_id, user.next_code(api), remember_device=True
    )
    assert assert_authenticated(r)["device_token"]


async def test_secure_cookies_unless_the_public_url_is_plain_http_localhost(
    backend: dict[str, Any],
) -> None:
    for public_url, secure in (
        ("https://auth.example.com", True),
        ("http://auth.example.com", True),
        ("http://localhost:8000", False),
        ("http://127.0.0.1:8000", True),
    ):
        app, api = await start_api(settings_for(backend, public_url=public_url))
        async with app.router.lifespan_context(app), api.client:
            user = await api.sign_up()
            r = await api.client.post(
                f"{AUTH}/login",
                json={"email": user["email"], "password": user["password"]},
                headers=COOKIE_MODE,
            )
            cookies = set_cookies(r)
            assert bool(cookies["cloudmfa_refresh"]["secure"]) is secure, public_url
            assert bool(cookies["cloudmfa_csrf"]["secure"]) is secure, public_url

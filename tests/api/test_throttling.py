"""Throttling (API.md "Throttling", "Login", "Audit events"), on both backends.

Per account: after 10 consecutive failed password or second-factor attempts, further attempts
answer 429 `rate_limited` with `Retry-After`, from any IP, until the window passes; only a
completed sign-in resets the count. Per client IP: a request budget on /api/v1/auth/* and
/api/v1/accounts. Refusals are audited once per window, not once per refusal.

Each test builds an app of its own (its own in-process store, or its own Redis key prefix), so
no counter leaks from one test into another.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pyotp
import pytest

from cloudmfa.store.audit import list_events
from conftest import PASSWORD, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import PROBLEM_KEYS

MAX_FAILURES = 10
WRONG = "wrong-password-" + "x" * 16
LOGIN = "/api/v1/auth/login"
VERIFY = "/api/v1/auth/verify"
JSON = {"content-type": "application/json"}


# --- helpers --------------------------------------------------------------------------------


@asynccontextmanager
async def throttled_app(
    backend: dict[str, Any], **overrides: Any
) -> AsyncIterator[tuple[Any, Api]]:
    """A fresh app: its own in-process store, or its own key space in the shared Redis (under
    the module's prefix, which the `backend` fixture sweeps afterwards)."""
    values: dict[str, Any] = {"login_max_failures": MAX_FAILURES, **overrides}
    if backend.get("redis_key_prefix"):
        values.setdefault(
            "redis_key_prefix", f"{backend['redis_key_prefix']}{secrets.token_hex(4)}:"
        )
    app, api = await start_api(make_settings(backend, **values))
    async with app.router.lifespan_context(app), api.client:
        yield app, api


def client_from(app: Any, ip: str, port: int = 1234) -> httpx.AsyncClient:
    """Another client of the same app, connecting from another address."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, port)), base_url="http://testserver"
    )


def random_ip() -> str:
    return (
        f"10.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
    )


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(LOGIN, json={"email": email, "password": password})


def assert_rate_limited(r: httpx.Response, *, max_retry_after: int) -> int:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert PROBLEM_KEYS <= set(body), body
    assert body["code"] == "rate_limited"
    assert body["status"] == 429
    raw = r.headers.get("retry-after")
    assert raw is not None, "every 429 carries Retry-After"
    assert raw.isdigit(), f"Retry-After must be whole seconds, got {raw!r}"
    seconds = int(raw)
    assert 0 < seconds <= max_retry_after, seconds
    return seconds


def assert_invalid_credentials(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "invalid_credentials"


async def fail_passwords(client: httpx.AsyncClient, email: str, times: int) -> None:
    for i in range(times):
        r = await login(client, email, WRONG)
        assert r.status_code == 401, f"attempt {i + 1}: {r.text}"
        assert r.json()["code"] == "invalid_credentials"


async def events(api: Api, *, type_: str, user_id: str | None = None) -> list[dict[str, Any]]:
    async with api.svc.engine.connect() as conn:
        return await list_events(conn, user_id=user_id, type_=type_, limit=10_000)


def totp_now(api: Api, secret: str) -> str:
    return pyotp.TOTP(secret).at(api.clock.now())


def wrong_totp(api: Api, secret: str) -> str:
    """A well-formed 6-digit code valid for none of the steps the server would accept."""
    totp = pyotp.TOTP(secret)
    now = api.clock.now().timestamp()
    valid = {totp.at(now + 30 * d) for d in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


async def user_with_totp(api: Api) -> dict[str, Any]:
    """A new account with an active authenticator app, enrolled through the API."""
    account = await api.sign_up()
    tokens = await api.login(account["email"])
    headers = bearer(tokens["access_token"])
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    factor_id, secret = r.json()["id"], r.json()["secret"]
    r = await api.client.post(
        f"/api/v1/me/factors/{factor_id}/activate",
        json={"code": totp_now(api, secret)},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    api.clock.advance(seconds=30)  # the activation used this time step
    return {**account, "factor_id": factor_id, "secret": secret}


async def start_mfa(api: Api, email: str, client: httpx.AsyncClient | None = None) -> str:
    r = await login(client or api.client, email, PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "mfa_required", body
    return str(body["mfa_token"])


async def verify(api: Api, mfa_token: str, factor_id: str, code: str) -> httpx.Response:
    return await api.client.post(
        VERIFY, json={"mfa_token": mfa_token, "factor_id": factor_id, "code": code}
    )


# --- per account ----------------------------------------------------------------------------


async def test_eleventh_attempt_is_refused_even_with_the_right_password(
    backend: dict[str, Any],
) -> None:
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        await fail_passwords(api.client, account["email"], MAX_FAILURES)

        r = await login(api.client, account["email"], PASSWORD)
        assert_rate_limited(r, max_retry_after=900)
        assert "access_token" not in r.text
        # And again: a refusal is not counted as a failure, nor does it open anything.
        assert_rate_limited(await login(api.client, account["email"], WRONG), max_retry_after=900)
        assert_rate_limited(
            await login(api.client, account["email"], PASSWORD), max_retry_after=900
        )

        failed = await events(api, type_="login.failed", user_id=account["id"])
        assert len(failed) == MAX_FAILURES
        succeeded = await events(api, type_="login.succeeded", user_id=account["id"])
        assert succeeded == []


async def test_account_throttle_holds_from_any_ip(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        await fail_passwords(api.client, account["email"], MAX_FAILURES)
        async with client_from(app, "10.9.8.7") as other:
            assert_rate_limited(await login(other, account["email"], PASSWORD), max_retry_after=900)
        async with client_from(app, "2001:db8::7", 4321) as v6:
            assert_rate_limited(await login(v6, account["email"], PASSWORD), max_retry_after=900)


async def test_failures_from_many_ips_add_up(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        for i in range(MAX_FAILURES):
            async with client_from(app, f"10.20.30.{i + 1}") as client:
                assert_invalid_credentials(await login(client, account["email"], WRONG))
        assert_rate_limited(
            await login(api.client, account["email"], PASSWORD), max_retry_after=900
        )


async def test_nine_failures_leave_one_attempt(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        await fail_passwords(api.client, account["email"], MAX_FAILURES - 1)
        # The tenth attempt is still evaluated; with the right password it signs in.
        r = await login(api.client, account["email"], PASSWORD)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "authenticated"


async def test_email_spellings_share_one_count(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        email = account["email"]
        spellings = [email, email.upper(), f"  {email}  ", email.capitalize()]
        for i in range(MAX_FAILURES):
            assert_invalid_credentials(
                await login(api.client, spellings[i % len(spellings)], WRONG)
            )
        for spelling in spellings:
            assert_rate_limited(await login(api.client, spelling, PASSWORD), max_retry_after=900)


async def test_accounts_are_throttled_independently(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        victim, bystander = await api.sign_up(), await api.sign_up()
        await fail_passwords(api.client, victim["email"], MAX_FAILURES)
        assert_rate_limited(await login(api.client, victim["email"], PASSWORD), max_retry_after=900)
        r = await login(api.client, bystander["email"], PASSWORD)
        assert r.status_code == 200, r.text


async def test_wrong_codes_count_together_with_wrong_passwords(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        user = await user_with_totp(api)
        email, factor_id, secret = user["email"], user["factor_id"], user["secret"]

        await fail_passwords(api.client, email, 5)
        token = await start_mfa(api, email)  # a right password: neither a failure nor a reset
        for i in range(4):
            r = await verify(api, token, factor_id, wrong_totp(api, secret))
            assert r.status_code == 401, f"code {i + 1}: {r.text}"
            assert r.json()["code"] == "invalid_code"
        # 5 wrong passwords + 4 wrong codes: one attempt left, spent on another wrong code.
        token2 = await start_mfa(api, email)
        r = await verify(api, token2, factor_id, wrong_totp(api, secret))
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "invalid_code"

        # Ten failures: the right code on a live token, and the right password, are refused.
        r = await verify(api, token2, factor_id, totp_now(api, secret))
        assert_rate_limited(r, max_retry_after=900)
        assert "access_token" not in r.text
        assert_rate_limited(await login(api.client, email, PASSWORD), max_retry_after=900)

        failed_codes = await events(api, type_="mfa.failed", user_id=user["id"])
        failed_passwords = await events(api, type_="login.failed", user_id=user["id"])
        assert len(failed_codes) == 5 and len(failed_passwords) == 5


async def test_wrong_codes_alone_reach_the_limit(backend: dict[str, Any]) -> None:
    """The per-token limit (5) ends a token; the account limit (10) spans tokens."""
    async with throttled_app(backend) as (app, api):
        user = await user_with_totp(api)
        email, factor_id, secret = user["email"], user["factor_id"], user["secret"]
        for _ in range(2):
            token = await start_mfa(api, email)
            for _ in range(5):
                r = await verify(api, token, factor_id, wrong_totp(api, secret))
                assert r.status_code == 401, r.text
                assert r.json()["code"] == "invalid_code"
        assert_rate_limited(await login(api.client, email, PASSWORD), max_retry_after=900)


async def test_right_password_alone_does_not_reset_the_count(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        user = await user_with_totp(api)
        email, factor_id = user["email"], user["factor_id"]

        await fail_passwords(api.client, email, MAX_FAILURES - 1)
        token = await start_mfa(api, email)  # right password, MFA left unfinished
        # Asking for the (nothing-to-send) TOTP challenge resets nothing either.
        r = await api.client.post(
            "/api/v1/auth/challenge", json={"mfa_token": token, "factor_id": factor_id}
        )
        assert r.status_code == 200, r.text
        await fail_passwords(api.client, email, 1)  # the tenth failure

        assert_rate_limited(await login(api.client, email, PASSWORD), max_retry_after=900)
        assert_rate_limited(
            await verify(api, token, factor_id, totp_now(api, user["secret"])), max_retry_after=900
        )


async def test_completed_sign_in_resets_the_count(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        user = await user_with_totp(api)
        email, factor_id, secret = user["email"], user["factor_id"], user["secret"]

        await fail_passwords(api.client, email, MAX_FAILURES - 1)
        token = await start_mfa(api, email)
        r = await verify(api, token, factor_id, totp_now(api, secret))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "authenticated"
        api.clock.advance(seconds=30)

        # A clean slate: ten more failures are evaluated before the eleventh is refused.
        await fail_passwords(api.client, email, MAX_FAILURES)
        assert_rate_limited(await login(api.client, email, PASSWORD), max_retry_after=900)


async def test_completed_password_only_sign_in_resets_the_count(backend: dict[str, Any]) -> None:
    # Without a second factor (optional MFA policy) the password completes the sign-in.
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        await fail_passwords(api.client, account["email"], MAX_FAILURES - 1)
        r = await login(api.client, account["email"], PASSWORD)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "authenticated"
        await fail_passwords(api.client, account["email"], MAX_FAILURES)
        assert_rate_limited(
            await login(api.client, account["email"], PASSWORD), max_retry_after=900
        )


async def test_unknown_emails_are_throttled_the_same_way(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        known = await api.sign_up()
        unknown = api.new_email("nobody")
        await fail_passwords(api.client, known["email"], MAX_FAILURES)
        await fail_passwords(api.client, unknown, MAX_FAILURES)

        r_known = await login(api.client, known["email"], WRONG)
        r_unknown = await login(api.client, unknown, WRONG)
        assert_rate_limited(r_known, max_retry_after=900)
        assert_rate_limited(r_unknown, max_retry_after=900)
        # Nothing in the refusal tells the two apart.
        assert r_known.json() == r_unknown.json()
        assert set(r_known.headers) == set(r_unknown.headers)
        async with client_from(app, "10.9.8.7") as other:
            assert_rate_limited(await login(other, unknown, PASSWORD), max_retry_after=900)


async def test_refusals_are_audited_once_per_window(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        await fail_passwords(api.client, account["email"], MAX_FAILURES)
        for _ in range(5):
            assert_rate_limited(
                await login(api.client, account["email"], PASSWORD), max_retry_after=900
            )
        limited = await events(api, type_="rate_limited", user_id=account["id"])
        assert len(limited) == 1, limited
        event = limited[0]
        assert event["outcome"] == "failure"
        assert event["subject_id"] == account["id"]
        # Refusals are not failures: the count of evaluated failures stays at the limit.
        assert len(await events(api, type_="login.failed", user_id=account["id"])) == MAX_FAILURES
        text = repr(event)
        assert PASSWORD not in text and WRONG not in text


async def test_parallel_burst_evaluates_at_most_the_limit(backend: dict[str, Any]) -> None:
    async with throttled_app(backend) as (app, api):
        account = await api.sign_up()
        responses = await asyncio.gather(
            *(login(api.client, account["email"], WRONG) for _ in range(30))
        )
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {401, 429}, [
            r.text for r in responses if r.status_code not in (401, 429)
        ]
        rejected = [r for r in responses if r.status_code == 401]
        refused = [r for r in responses if r.status_code == 429]
        assert len(rejected) <= MAX_FAILURES, statuses
        assert len(rejected) + len(refused) == 30
        for r in refused:
            assert_rate_limited(r, max_retry_after=900)

        failed = await events(api, type_="login.failed", user_id=account["id"])
        assert len(failed) <= MAX_FAILURES
        assert len(failed) == len(rejected)
        # However the burst interleaved, the limit holds afterwards too.
        left = MAX_FAILURES - len(rejected)
        await fail_passwords(api.client, account["email"], left)
        assert_rate_limited(
            await login(api.client, account["email"], PASSWORD), max_retry_after=900
        )


async def test_parallel_burst_of_wrong_codes_evaluates_at_most_the_limit(
    backend: dict[str, Any],
) -> None:
    async with throttled_app(backend) as (app, api):
        user = await user_with_totp(api)
        email, factor_id, secret = user["email"], user["factor_id"], user["secret"]
        tokens = [await start_mfa(api, email) for _ in range(6)]
        responses = await asyncio.gather(
            *(verify(api, t, factor_id, wrong_totp(api, secret)) for t in tokens for _ in range(5))
        )
        codes = [r.json()["code"] for r in responses]
        assert set(codes) <= {"invalid_code", "rate_limited", "mfa_token_expired"}, codes
        failed = await events(api, type_="mfa.failed", user_id=user["id"])
        assert len(failed) <= MAX_FAILURES
        assert codes.count("invalid_code") == len(failed)
        for r in responses:
            if r.status_code == 429:
                assert_rate_limited(r, max_retry_after=900)


async def test_window_passes(backend: dict[str, Any]) -> None:
    window = 2
    async with throttled_app(backend, login_failure_window_s=window) as (app, api):
        account = await api.sign_up()
        await fail_passwords(api.client, account["email"], MAX_FAILURES)
        assert_rate_limited(
            await login(api.client, account["email"], PASSWORD), max_retry_after=window
        )
        # The in-process store follows the app's clock, Redis its own: move both on.
        api.clock.advance(seconds=window + 1)
        await asyncio.sleep(window + 0.5)
        r = await login(api.client, account["email"], PASSWORD)
        assert r.status_code == 200, r.text


# --- per client IP --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [LOGIN, "/api/v1/accounts"])
async def test_ip_limit_sixth_request_is_refused(backend: dict[str, Any], path: str) -> None:
    async with throttled_app(backend, ip_rate_limit="5/minute") as (app, api):
        ip = random_ip()
        async with client_from(app, ip) as client:
            for i in range(5):
                r = await client.post(path, json={"email": api.new_email(), "password": PASSWORD})
                assert r.status_code != 429, f"request {i + 1}: {r.text}"
            r = await client.post(path, json={"email": api.new_email(), "password": PASSWORD})
            assert_rate_limited(r, max_retry_after=61)
            # Whatever the body: even a request that would fail validation is refused.
            assert_rate_limited(await client.post(path, json={}), max_retry_after=61)

            # Another address is unaffected.
            async with client_from(app, random_ip()) as other:
                r = await other.post(path, json={"email": api.new_email(), "password": PASSWORD})
                assert r.status_code in (201, 401), r.text


async def test_ip_limit_counts_requests_that_never_parse(backend: dict[str, Any]) -> None:
    """Every request counts, however broken: malformed JSON, a form body, a wrong method,
    a path that does not exist. Only the sixth is refused, whatever it is."""
    async with throttled_app(backend, ip_rate_limit="5/minute") as (app, _):
        async with client_from(app, random_ip()) as client:
            broken = [
                await client.post(LOGIN, content=b'{"email": ', headers=JSON),
                await client.post(VERIFY, content=b"\xff", headers=JSON),
                await client.post("/api/v1/auth/refresh", content=b"refresh_token=x"),
                await client.get(LOGIN),
                await client.post("/api/v1/accounts", content=b"[", headers=JSON),
            ]
            assert [r.status_code for r in broken] == [422, 422, 422, 405, 422]
            assert_rate_limited(
                await client.get("/api/v1/auth/no-such-endpoint"), max_retry_after=61
            )
            r = await client.post(LOGIN, json={"email": "a@example.com", "password": WRONG})
            assert_rate_limited(r, max_retry_after=61)
            metrics = (await client.get("/metrics")).text
            assert 'route="/api/v1/auth/*",status="429"' in metrics


PREFLIGHT = {
    "Origin": "https://app.example.com",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_ip_limit_does_not_count_cors_preflights(backend: dict[str, Any]) -> None:
    """A browser sends a preflight on its own before each cross-origin POST: counting it would
    halve a web client's budget. A plain OPTIONS, no preflight, counts like any wrong method."""
    async with throttled_app(backend, ip_rate_limit="5/minute") as (app, api):
        async with client_from(app, random_ip()) as client:
            for path in (LOGIN, VERIFY, "/api/v1/accounts") * 4:
                assert (await client.options(path, headers=PREFLIGHT)).status_code != 429
            for _ in range(5):
                assert_invalid_credentials(await login(client, api.new_email(), WRONG))
            assert_rate_limited(await login(client, api.new_email(), WRONG), max_retry_after=61)
        async with client_from(app, random_ip()) as client:
            for _ in range(5):
                assert (await client.options(LOGIN)).status_code == 405
            assert_rate_limited(await client.options(LOGIN), max_retry_after=61)


async def test_ip_limit_counts_a_body_declared_too_large(backend: dict[str, Any]) -> None:
    """The count comes before the size check: a refused body still uses up the budget."""
    async with throttled_app(backend, ip_rate_limit="5/minute", max_body_bytes=1024) as (app, _):
        async with client_from(app, random_ip()) as client:
            big = b'{"email": "' + b"x" * 2000 + b'"}'
            for _ in range(5):
                r = await client.post(LOGIN, content=big, headers=JSON)
                assert r.status_code == 413, r.text
            r = await client.post(LOGIN, content=big, headers=JSON)
            assert_rate_limited(r, max_retry_after=61)


async def test_ip_limit_is_shared_by_login_and_sign_up(backend: dict[str, Any]) -> None:
    async with throttled_app(backend, ip_rate_limit="5/minute") as (app, api):
        async with client_from(app, random_ip()) as client:
            email = api.new_email()
            r = await client.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
            assert r.status_code == 201, r.text
            r = await login(client, email, PASSWORD)
            assert r.status_code == 200, r.text
            headers = bearer(r.json()["access_token"])
            for _ in range(3):
                assert_invalid_credentials(await login(client, email, WRONG))
            # Five requests used; the sixth is refused whichever endpoint it goes to.
            assert_rate_limited(
                await client.post(
                    "/api/v1/accounts", json={"email": api.new_email(), "password": PASSWORD}
                ),
                max_retry_after=61,
            )
            assert_rate_limited(await login(client, email, PASSWORD), max_retry_after=61)
            assert_rate_limited(
                await client.post("/api/v1/auth/refresh", json={"refresh_token": "x"}),
                max_retry_after=61,
            )

            # Endpoints outside /auth/* and /accounts are not limited.
            for _ in range(10):
                r = await client.get("/api/v1/me", headers=headers)
                assert r.status_code == 200, r.text
                r = await client.get("/healthz")
                assert r.status_code == 200, r.text


async def test_ip_limit_refusal_is_audited_once_per_window(backend: dict[str, Any]) -> None:
    async with throttled_app(backend, ip_rate_limit="5/minute") as (app, api):
        ip = random_ip()
        async with client_from(app, ip) as client:
            for _ in range(5):
                assert_invalid_credentials(await login(client, api.new_email(), WRONG))
            for _ in range(4):
                assert_rate_limited(await login(client, api.new_email(), WRONG), max_retry_after=61)
        mine = [e for e in await events(api, type_="rate_limited") if e["ip"] == ip]
        assert len(mine) == 1, mine
        assert mine[0]["outcome"] == "failure"
        assert mine[0]["actor_id"] is None


async def test_ip_limit_does_not_apply_to_unlimited_endpoints(backend: dict[str, Any]) -> None:
    async with throttled_app(backend, ip_rate_limit="5/minute") as (app, api):
        async with client_from(app, random_ip()) as client:
            for _ in range(12):
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/api/v1/me")).status_code == 401  # no token: not 429
            # The budget was untouched by all of that.
            for _ in range(5):
                assert_invalid_credentials(await login(client, api.new_email(), WRONG))
            assert_rate_limited(await login(client, api.new_email(), WRONG), max_retry_after=61)


async def test_ip_limit_window_moves_on(backend: dict[str, Any]) -> None:
    """A per-second budget, to see the window move without waiting a minute."""
    async with throttled_app(backend, ip_rate_limit="3/second") as (app, api):
        async with client_from(app, random_ip()) as client:
            started = time.monotonic()
            for _ in range(3):
                assert (await login(client, api.new_email(), WRONG)).status_code == 401
            r = await login(client, api.new_email(), WRONG)
            if time.monotonic() - started < 0.9:
                assert_rate_limited(r, max_retry_after=2)
            await asyncio.sleep(1.2)
            assert (await login(client, api.new_email(), WRONG)).status_code == 401

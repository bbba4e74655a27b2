"""The fast path (api/fast_path.py) answers POST /auth/verify exactly as FastAPI's router does.

Two apps side by side on the same backend, one with `fast_path` on (the default) and one with
it off; every request below goes to both, each with its own user, and the answers must match.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.types import Receive, Scope, Send

from cloudmfa.api import auth
from cloudmfa.api.fast_path import FastPath
from conftest import Api, start_api
from conftest import test_settings as settings_for
from support import assert_authenticated, mfa_user

VERIFY = "/api/v1/auth/verify"

Scenario = Callable[[Api], Awaitable[httpx.Response]]


@asynccontextmanager
async def two_apps(backend: dict[str, Any], **overrides: Any) -> AsyncIterator[tuple[Api, Api]]:
    """(fast path on, fast path off) on the same backend."""
    async with AsyncExitStack() as stack:
        apis = []
        for fast in (True, False):
            # Each app its own key space on Redis, so they do not share the per-IP counter.
            shared = backend.get("redis_key_prefix")
            prefix = {"redis_key_prefix": f"{shared}{secrets.token_hex(3)}:"} if shared else {}
            settings = settings_for(
                backend, fast_path=fast, max_body_bytes=1024, **prefix, **overrides
            )
            app, api = await start_api(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            await stack.enter_async_context(api.client)
            apis.append(api)
        yield apis[0], apis[1]


@pytest_asyncio.fixture(scope="module")
async def pair(backend: dict[str, Any]) -> AsyncIterator[tuple[Api, Api]]:
    async with two_apps(backend) as apis:
        yield apis


async def _started(api: Api) -> tuple[str, str, str]:
    """A user with TOTP and a fresh mfa_token: (mfa_token, factor id, the current code)."""
    user = await mfa_user(api, "fast")
    body = await api.login(user.email)
    return body["mfa_token"], user.factor_id, user.next_code(api)


async def _post(api: Api, content: bytes, content_type: str | None = "application/json") -> Any:
    headers = {"content-type": content_type} if content_type else {}
    return await api.client.post(VERIFY, content=content, headers=headers)


async def right_code(api: Api) -> httpx.Response:
    token, factor, code = await _started(api)
    body = {"mfa_token": token, "factor_id": factor, "code": code, "remember_device": True}
    return await _post(api, json.dumps(body).encode())


async def wrong_code(api: Api) -> httpx.Response:
    token, factor, code = await _started(api)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    return await _post(
        api, json.dumps({"mfa_token": token, "factor_id": factor, "code": wrong}).encode()
    )


async def unknown_token(api: Api) -> httpx.Response:
    return await _post(api, b'{"mfa_token": "nope", "factor_id": "x", "code": "123456"}')


async def missing_field(api: Api) -> httpx.Response:
    return await _post(api, b'{"mfa_token": "t", "code": "123456"}')


async def code_and_credential(api: Api) -> httpx.Response:
    return await _post(api, b'{"mfa_token": "t", "factor_id": "f", "code": "1", "credential": {}}')


async def too_long_code(api: Api) -> httpx.Response:
    return await _post(
        api, json.dumps({"mfa_token": "t", "factor_id": "f", "code": "1" * 200}).encode()
    )


async def empty_body(api: Api) -> httpx.Response:
    return await _post(api, b"")


async def form_body(api: Api) -> httpx.Response:
    return await _post(api, b"mfa_token=t&factor_id=f&code=1", "application/x-www-form-urlencoded")


async def no_content_type(api: Api) -> httpx.Response:
    return await _post(api, b'{"mfa_token": "t", "factor_id": "f", "code": "1"}', None)


async def body_too_large(api: Api) -> httpx.Response:
    return await _post(api, json.dumps({"mfa_token": "t" * 2000, "factor_id": "f"}).encode())


async def malformed_json(api: Api) -> httpx.Response:
    return await _post(api, b'{"mfa_token": "t", "factor_id": ')


async def invalid_utf8(api: Api) -> httpx.Response:
    return await _post(api, b'{"mfa_token": "\xff\xfe", "factor_id": "f", "code": "1"}')


def _shape(r: httpx.Response) -> dict[str, Any]:
    """What a client can see, without the values that differ by user or time."""
    body = r.json()
    headers = {
        name: r.headers.get(name)
        for name in (
            "content-type",
            "cache-control",
            "x-content-type-options",
            "www-authenticate",
            "retry-after",
        )
    }
    if r.status_code == 200:
        return {"status": 200, "headers": headers, "keys": sorted(body), "type": body["token_type"]}
    return {"status": r.status_code, "headers": headers, "problem": body}


@pytest.mark.parametrize(
    "scenario",
    [
        right_code,
        wrong_code,
        unknown_token,
        missing_field,
        code_and_credential,
        too_long_code,
        empty_body,
        form_body,
        no_content_type,
        body_too_large,
    ],
    ids=lambda s: s.__name__,
)
async def test_answers_as_the_router_does(pair: tuple[Api, Api], scenario: Scenario) -> None:
    fast, router = pair
    fast_answer, router_answer = await scenario(fast), await scenario(router)
    assert _shape(fast_answer) == _shape(router_answer)


@pytest.mark.parametrize("scenario", [malformed_json, invalid_utf8], ids=lambda s: s.__name__)
async def test_unparseable_bodies_are_the_same_problem(
    pair: tuple[Api, Api], scenario: Scenario
) -> None:
    """The detail may differ: FastAPI reports where json.loads stopped, pydantic what it saw."""
    fast, router = [_shape(await scenario(api)) for api in pair]
    for shape in (fast, router):
        del shape["problem"]["detail"]
    assert fast == router
    assert fast["status"] == 422


async def test_a_success_signs_in_and_remembers_the_device(pair: tuple[Api, Api]) -> None:
    body = assert_authenticated(await right_code(pair[0]))
    assert body["device_token"]


async def test_the_per_ip_limit_applies_as_on_the_router(backend: dict[str, Any]) -> None:
    answers = []
    async with two_apps(backend, ip_rate_limit="3/minute") as pair:
        for api in pair:
            statuses = [(await unknown_token(api)).status_code for _ in range(4)]
            assert statuses == [401, 401, 401, 429]
            answers.append(_shape(await unknown_token(api)))
    assert answers[0] == answers[1]
    assert answers[0]["status"] == 429
    assert answers[0]["headers"]["retry-after"]


async def test_the_route_is_answered_without_the_router(backend: dict[str, Any]) -> None:
    """The middleware itself answers: behind it, an app that knows no routes at all."""
    app, api = await start_api(settings_for(backend))

    async def no_routes(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fast = FastPath(no_routes, routes=auth.FAST_ROUTES)

    async def with_app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app  # services and exception handlers, as Starlette sets them
        await fast(scope, receive, send)

    async with app.router.lifespan_context(app), api.client:
        token, factor, code = await _started(api)
        transport = httpx.ASGITransport(app=with_app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as bare:
            body = {"mfa_token": token, "factor_id": factor, "code": code}
            assert_authenticated(await bare.post(VERIFY, json=body))
            assert (await bare.post("/api/v1/auth/login", json={})).status_code == 404


def test_only_an_app_with_the_fast_path_has_the_middleware(backend: dict[str, Any]) -> None:
    from cloudmfa.app import create_app

    for fast in (True, False):
        app = create_app(settings_for(backend, fast_path=fast))
        assert any(m.cls is FastPath for m in app.user_middleware) is fast


async def test_metrics_count_the_route_by_its_template(pair: tuple[Api, Api]) -> None:
    fast, _ = pair
    await unknown_token(fast)
    text = (await fast.client.get("/metrics")).text
    assert 'route="/api/v1/auth/verify",status="401"' in text

"""Problem details for every error, hostile request bodies, security headers and the operations
endpoints (API.md conventions, "Operations")."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from cloudmfa.store.db import create_engine, read_only
from conftest import PASSWORD, Api, bearer, start_api
from conftest import test_settings as settings_for
from support import assert_problem, free_port

MAX_BODY = 64 * 1024


def assert_client_error_problem(r: httpx.Response) -> dict[str, Any]:
    assert 400 <= r.status_code < 500, r.text
    return assert_problem(r, r.status_code, r.json().get("code"))


async def post_raw(api: Api, path: str, content: bytes, **headers: str) -> httpx.Response:
    return await api.client.post(
        path, content=content, headers={"Content-Type": "application/json", **headers}
    )


# Every error is a problem


async def test_unknown_path_is_not_found_problem(api: Api) -> None:
    for path in ("/nope", "/api/v1/nope", "/api/v2/accounts", "/api/v1/me/nope"):
        assert_problem(await api.client.get(path), 404, "not_found")


async def test_wrong_method_is_405_problem_with_allow(api: Api) -> None:
    for method, path, allowed in (
        ("GET", "/api/v1/accounts", "POST"),
        ("PUT", "/api/v1/auth/login", "POST"),
        ("POST", "/healthz", "GET"),
    ):
        r = await api.client.request(method, path)
        assert_problem(r, 405, "method_not_allowed")
        assert allowed in r.headers["allow"]


async def test_405_allows_every_method_of_the_path(api: Api) -> None:
    """RFC 9110 §15.5.6: Allow lists the methods the resource supports, including those of
    routes declared separately for the same path (GET and POST /me/factors)."""
    for method in ("PUT", "OPTIONS", "PATCH"):
        r = await api.client.request(method, "/api/v1/me/factors")
        assert_problem(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "GET, POST"
    r = await api.client.request("PUT", "/api/v1/me/factors/some-id")
    assert r.headers["allow"] == "DELETE, PATCH"


async def test_invalid_json_is_validation_error(api: Api) -> None:
    for content in (b'{"email": "a@example.com", "password":', b"not json", b"{'a': 1}"):
        r = await post_raw(api, "/api/v1/accounts", content)
        assert_problem(r, 422, "validation_error")


async def test_missing_or_empty_body_is_validation_error(api: Api) -> None:
    assert_problem(await post_raw(api, "/api/v1/accounts", b""), 422, "validation_error")
    assert_problem(await post_raw(api, "/api/v1/auth/login", b"{}"), 422, "validation_error")
    assert_problem(await post_raw(api, "/api/v1/auth/login", b"[]"), 422, "validation_error")
    assert_problem(await post_raw(api, "/api/v1/auth/login", b"null"), 422, "validation_error")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/accounts", {"email": 12345, "password": PASSWORD}),
        ("/api/v1/accounts", {"email": "typed@example.com", "password": ["a", "b"]}),
        (
            "/api/v1/accounts",
            {"email": "typed@example.com", "password": PASSWORD, "display_name": {}},
        ),
        ("/api/v1/auth/login", {"email": 12345, "password": PASSWORD}),
        ("/api/v1/auth/login", {"email": "typed@example.com", "password": ["a"]}),
        ("/api/v1/auth/login", {"email": None, "password": PASSWORD}),
        ("/api/v1/auth/refresh", {"refresh_token": 42}),
    ],
)
async def test_wrong_types_are_validation_error(api: Api, path: str, body: dict[str, Any]) -> None:
    r = await api.client.post(path, json=body)
    problem = assert_problem(r, 422, "validation_error")
    assert PASSWORD not in json.dumps(problem)


async def test_validation_error_never_echoes_the_password(api: Api) -> None:
    secret = "hunter2-" + "s" * 40
    r = await api.client.post(
        "/api/v1/accounts", json={"email": "not an email", "password": secret}
    )
    problem = assert_problem(r, 422, "validation_error")
    assert secret not in r.text
    assert problem["detail"]


async def test_body_over_the_limit_with_content_length_is_413(api: Api) -> None:
    body = json.dumps({"email": "big@example.com", "password": "p" * (MAX_BODY + 10)}).encode()

    r = await post_raw(api, "/api/v1/accounts", body)

    assert_problem(r, 413, "payload_too_large")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


async def test_body_over_the_limit_sent_chunked_is_413(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "chunked@example.com", "password": "'
        for _ in range(20):
            yield b"p" * 4096
        yield b'"}'

    r = await api.client.post(
        "/api/v1/accounts", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_problem(r, 413, "payload_too_large")
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_body_just_under_the_limit_is_read(api: Api) -> None:
    body = json.dumps({"email": "edge@example.com", "password": "p" * (MAX_BODY - 100)}).encode()
    assert len(body) <= MAX_BODY

    r = await post_raw(api, "/api/v1/auth/login", body)

    # Parsed and judged on its merits: an unknown account, not a size problem.
    assert r.status_code != 413
    assert_client_error_problem(r)


VERIFY = "/api/v1/auth/verify"
JSON_TYPE = "application/json"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"mfa_token": "t", "code": "123456"}', JSON_TYPE),  # no factor_id
        (b'{"mfa_token": "t", "factor_id": "f", "code": "1", "credential": {}}', JSON_TYPE),
        (b'{"mfa_token": "t", "factor_id": "f", "code": "' + b"1" * 200 + b'"}', JSON_TYPE),
        (b"", JSON_TYPE),
        (b"mfa_token=t&factor_id=f&code=1", "application/x-www-form-urlencoded"),
        (b'{"mfa_token": "t", "factor_id": "f", "code": "1"}', None),  # no content type
        (b'{"mfa_token": "t", "factor_id": ', JSON_TYPE),
        (b'{"mfa_token": "\xff\xfe", "factor_id": "f", "code": "1"}', JSON_TYPE),
    ],
    ids=[
        "missing-field",
        "code-and-credential",
        "code-too-long",
        "empty",
        "form",
        "no-content-type",
        "malformed-json",
        "invalid-utf8",
    ],
)
async def test_verify_bodies_the_router_refuses_are_validation_problems(
    api: Api, content: bytes, content_type: str | None
) -> None:
    """POST /auth/verify, the hottest endpoint, refuses what its model refuses: only JSON
    (FastAPI is strict about the content type), exactly one proof, bounded fields."""
    headers = {"content-type": content_type} if content_type else {}
    r = await api.client.post(VERIFY, content=content, headers=headers)
    assert_problem(r, 422, "validation_error")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_verify_with_an_unknown_mfa_token_is_a_401_problem(api: Api) -> None:
    r = await api.client.post(VERIFY, json={"mfa_token": "nope", "factor_id": "x", "code": "1"})
    assert_problem(r, 401, "mfa_token_expired")
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
async def test_deeply_nested_json_is_a_client_error(api: Api, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    content = opener * 10_000 + b"1" + closer * 10_000
    assert len(content) <= MAX_BODY

    for path in ("/api/v1/accounts", "/api/v1/auth/login"):
        r = await post_raw(api, path, content)
        assert_client_error_problem(r)


async def test_invalid_utf8_is_validation_error(api: Api) -> None:
    for content in (
        b'{"email": "\xff\xfe@example.com", "password": "plum-orbit-velvet-canyon-42"}',
        b'{"email": "a@example.com", "password": "\xc3\x28\xa0\xa1-orbit-velvet-canyon"}',
        b"\xef\xbb\xbf\xff",
    ):
        for path in ("/api/v1/accounts", "/api/v1/auth/login"):
            r = await post_raw(api, path, content)
            assert_problem(r, 422, "validation_error")


NUL = "\\u0000"
SURROGATE = "\\ud800"
GOOD = PASSWORD


def _raw_json(**fields: str) -> bytes:
    # Values are already JSON string bodies (with escapes), so json.dumps is not used.
    return ("{" + ",".join(f'"{k}":"{v}"' for k, v in fields.items()) + "}").encode()


HOSTILE_BODIES = [
    ("/api/v1/accounts", _raw_json(email=f"a{NUL}@example.com", password=GOOD)),
    ("/api/v1/accounts", _raw_json(email=f"a{SURROGATE}@example.com", password=GOOD)),
    ("/api/v1/accounts", _raw_json(email="hostile1@example.com", password=f"{GOOD}{NUL}")),
    ("/api/v1/accounts", _raw_json(email="hostile2@example.com", password=f"{GOOD}{SURROGATE}")),
    (
        "/api/v1/accounts",
        _raw_json(email="hostile3@example.com", password=GOOD, display_name=f"x{NUL}y"),
    ),
    (
        "/api/v1/accounts",
        _raw_json(email="hostile4@example.com", password=GOOD, display_name=f"x{SURROGATE}y"),
    ),
    ("/api/v1/auth/login", _raw_json(email=f"a{NUL}@example.com", password=GOOD)),
    ("/api/v1/auth/login", _raw_json(email=f"a{SURROGATE}@example.com", password=GOOD)),
    ("/api/v1/auth/login", _raw_json(email="a@example.com", password=f"{NUL}")),
    ("/api/v1/auth/login", _raw_json(email="a@example.com", password=f"x{SURROGATE}")),
    ("/api/v1/auth/refresh", _raw_json(refresh_token=f"abc{NUL}def")),
    ("/api/v1/auth/refresh", _raw_json(refresh_token=f"abc{SURROGATE}def")),
]


@pytest.mark.parametrize(("path", "content"), HOSTILE_BODIES)
async def test_nul_and_lone_surrogates_are_validation_error(
    api: Api, path: str, content: bytes
) -> None:
    r = await post_raw(api, path, content)

    assert_problem(r, 422, "validation_error")


async def test_nul_and_lone_surrogates_in_authenticated_bodies_are_validation_error(
    api: Api,
) -> None:
    user, headers = await api.signed_in("hostile")
    for bad in (NUL, SURROGATE):
        for content in (
            _raw_json(
                current_password=f"{PASSWORD}{bad}", new_password="saffron-glacier-lantern-97"
            ),
            _raw_json(current_password=PASSWORD, new_password=f"saffron-glacier{bad}-lantern-97"),
        ):
            r = await post_raw(api, "/api/v1/me/password", content, **headers)
            assert_problem(r, 422, "validation_error")
    # Nothing changed.
    await api.login(user["email"])


async def test_nul_and_lone_surrogates_in_query_strings_are_never_500(api: Api) -> None:
    _, headers = await api.signed_in("querystring")
    for value in ("%00", "%ED%A0%80", "%FF"):
        r = await api.client.get(f"/api/v1/me/events?cursor={value}", headers=headers)
        assert_client_error_problem(r)
        r = await api.client.delete(f"/api/v1/me/sessions/{value}", headers=headers)
        assert_client_error_problem(r)


# Headers


async def test_every_response_carries_nosniff(api: Api) -> None:
    user, headers = await api.signed_in("headers")
    responses = [
        await api.client.get("/healthz"),
        await api.client.get("/readyz"),
        await api.client.get("/metrics"),
        await api.client.get("/openapi.json"),
        await api.client.get("/docs"),
        await api.client.get("/.well-known/jwks.json"),
        await api.client.get("/api/v1/me", headers=headers),
        await api.client.get("/api/v1/me"),
        await api.client.get("/nope"),
        await api.client.delete("/healthz"),
        await post_raw(api, "/api/v1/accounts", b"{"),
        await api.client.post("/api/v1/auth/logout", headers=headers),
    ]
    for r in responses:
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.status_code)
    assert user


async def test_api_responses_carry_no_store(api: Api) -> None:
    email = api.new_email("nostore")
    responses = [
        await api.client.post("/api/v1/accounts", json={"email": email, "password": PASSWORD}),
        await api.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}),
        await api.client.post("/api/v1/auth/login", json={"email": email, "password": "wrong-one"}),
        await api.client.get("/api/v1/me"),
        await api.client.get("/api/v1/nope"),
    ]
    tokens = responses[1].json()
    responses += [
        await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"])),
        await api.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        ),
    ]
    for r in responses:
        assert "no-store" in r.headers.get("cache-control", ""), (r.request.url, r.status_code)


async def test_hsts_only_over_https(api: Api, edge_app: Any) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=edge_app, client=("127.0.0.1", 50000)),
        base_url="https://testserver",
    ) as https:
        for path in ("/healthz", "/api/v1/me", "/nope"):
            r = await https.get(path)
            hsts = r.headers.get("strict-transport-security", "")
            assert re.match(r"max-age=\d+", hsts), (path, hsts)
            assert int(re.match(r"max-age=(\d+)", hsts).group(1)) >= 31536000  # type: ignore[union-attr]
            assert r.headers["x-content-type-options"] == "nosniff"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=edge_app, client=("127.0.0.1", 50000)),
        base_url="http://testserver",
    ) as plain:
        for path in ("/healthz", "/api/v1/me", "/nope"):
            r = await plain.get(path)
            assert "strict-transport-security" not in r.headers
    r = await api.client.get("/healthz")
    assert "strict-transport-security" not in r.headers


@pytest_asyncio.fixture(scope="module")
async def edge_app(backend: dict[str, Any]) -> AsyncIterator[Any]:
    """A second app on the module's database, for clients with other base URLs."""
    app, other = await start_api(settings_for(backend))
    async with app.router.lifespan_context(app), other.client:
        yield app


# Operations


async def test_healthz_is_ok(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_is_ready(api: Api) -> None:
    r = await api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


async def test_a_redis_that_does_not_answer_makes_a_request_503_not_500(tmp_path: Path) -> None:
    """redis-py's connection errors are not the builtin ConnectionError the edge answers 503
    for; the store and the per-IP limiter report them as one."""
    port = free_port()
    settings = settings_for(
        {"database_url": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"},
        redis_url=f"redis://127.0.0.1:{port}/0",
    )
    app, down = await start_api(settings)
    async with app.router.lifespan_context(app), down.client:
        assert_problem(await down.client.get("/readyz"), 503, "unavailable")
        r = await down.client.post(
            "/api/v1/auth/login", json={"email": "down@example.com", "password": PASSWORD}
        )
        assert_problem(r, 503, "unavailable")
        assert r.headers["retry-after"] == "1"
        for leak in (str(port), "redis", "Traceback", PASSWORD):
            assert leak not in r.text


async def test_readyz_is_unavailable_when_the_database_is_unreachable(
    backend: dict[str, Any],
) -> None:
    app, broken = await start_api(settings_for(backend))
    async with app.router.lifespan_context(app), broken.client:
        assert (await broken.client.get("/readyz")).status_code == 200
        await broken.svc.engine.dispose()
        broken.svc.engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/x")
        broken.svc.reader = read_only(broken.svc.engine)

        r = await broken.client.get("/readyz")

        assert_problem(r, 503, "unavailable")
        for leak in ("127.0.0.1:1", "asyncpg", "Traceback", "postgres", "Connection refused"):
            assert leak not in r.text
        # The process itself is alive.
        assert (await broken.client.get("/healthz")).status_code == 200
        # A call that needs the database fails as a bare problem, leaking nothing.
        r = await broken.client.post(
            "/api/v1/auth/login", json={"email": "down@example.com", "password": PASSWORD}
        )
        assert_problem(r, 503, "unavailable")
        assert r.headers["retry-after"] == "1"
        assert r.headers["x-content-type-options"] == "nosniff"
        for leak in ("127.0.0.1:1", "asyncpg", "Traceback", "postgres", "SELECT", PASSWORD):
            assert leak not in r.text


async def test_metrics_is_prometheus_text(api: Api) -> None:
    await api.client.get("/healthz")
    await api.client.get("/nope")

    r = await api.client.get("/metrics")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE cloudmfa_http_requests_total counter" in text
    assert re.search(
        r'^cloudmfa_http_requests_total\{[^}]*route="/healthz"[^}]*status="200"[^}]*\} [1-9]',
        text,
        re.MULTILINE,
    )
    assert re.search(r'^cloudmfa_http_requests_total\{[^}]*status="404"', text, re.MULTILINE)


async def test_metrics_label_invented_methods_as_other(api: Api) -> None:
    """A client may send any token as a method; each distinct label value would be a new time
    series for the life of the process."""
    for method in ("BREW", "X-PROBE-1", "X-PROBE-2"):
        assert_problem(await api.client.request(method, "/healthz"), 405, "method_not_allowed")

    text = (await api.client.get("/metrics")).text

    assert "X-PROBE" not in text and "BREW" not in text
    assert 'method="OTHER",route="/healthz",status="405"' in text


async def test_metrics_never_contain_tokens_or_emails(api: Api) -> None:
    user, headers = await api.signed_in("metrics")
    await api.client.get("/api/v1/me", headers=headers)
    await api.client.delete(f"/api/v1/me/sessions/{user['session_id']}", headers=headers)

    text = (await api.client.get("/metrics")).text

    for secret in (user["access_token"], user["refresh_token"], user["email"], user["session_id"]):
        assert secret not in text
    assert "/api/v1/me/sessions/{session_id}" in text


EXPECTED_PATHS = [
    "/api/v1/accounts",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/me",
    "/api/v1/me/sessions",
    "/api/v1/me/sessions/{session_id}",
    "/api/v1/me/password",
    "/api/v1/me/events",
    "/api/v1/admin/users",
    "/api/v1/admin/users/{user_id}",
    "/api/v1/admin/users/{user_id}/lock",
    "/api/v1/admin/users/{user_id}/unlock",
    "/api/v1/admin/users/{user_id}/factors",
    "/api/v1/admin/audit",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/metrics",
]


async def test_openapi_lists_every_implemented_path(api: Api) -> None:
    r = await api.client.get("/openapi.json")

    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    missing = [p for p in EXPECTED_PATHS if p not in paths]
    assert missing == []
    assert "post" in paths["/api/v1/accounts"]
    assert "delete" in paths["/api/v1/me/sessions/{session_id}"]
    assert {"get"} <= set(paths["/api/v1/me/events"])
    assert "post" in paths["/api/v1/admin/users/{user_id}/lock"]
    assert "delete" in paths["/api/v1/admin/users/{user_id}/factors"]
    # Errors are documented as problem details.
    login_401 = paths["/api/v1/auth/login"]["post"]["responses"]["401"]
    assert "application/problem+json" in login_401["content"]


async def test_docs_are_served_with_every_file_from_the_service(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sources and all(not re.match(r"\w+:|//", source) for source in sources), sources
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    for source in sources:
        asset = await api.client.get("/" + source)
        assert asset.status_code == 200, source
        assert asset.headers["content-type"].startswith(("text/javascript", "text/css"))
    init = await api.client.get("/docs/assets/init.js")
    assert "openapi.json" in init.text
    assert "SwaggerUIBundle" in (await api.client.get("/docs/assets/swagger-ui-bundle.js")).text


async def test_docs_serve_only_their_named_assets(api: Api) -> None:
    for name in ("index.html", "..%2f..%2fconfig.py", "swagger-ui.js", "%2e%2e"):
        assert_problem(await api.client.get(f"/docs/assets/{name}"), 404, "not_found")


async def test_a_sqlite_write_lock_held_too_long_answers_503_not_500(
    tmp_path: Path,
) -> None:
    """Two processes on one SQLite file can hold the write lock past the busy timeout; the
    answer is then a retryable 503, not an internal error."""
    db_file = tmp_path / "locked.db"
    settings = settings_for(
        {"database_url": f"sqlite+aiosqlite:///{db_file}", "redis_url": None},
        sqlite_busy_timeout_ms=200,
    )
    app, api = await start_api(settings)
    async with app.router.lifespan_context(app), api.client:
        holder = sqlite3.connect(db_file, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process writing, and slow about it
            r = await api.client.post(
                "/api/v1/accounts",
                json={"email": api.new_email("locked"), "password": PASSWORD},
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await assert_retryable_then_through(api, r, ("locked", "OperationalError"))


async def test_sqlite_writers_take_turns_first_come_first_served_and_reads_go_on(
    tmp_path: Path,
) -> None:
    """A process's writers share one connection (store/db.py): while one holds it, the next
    wait their turn in the order they came, reads are answered meanwhile from a pool of their
    own, and a writer that waits past the busy timeout is answered a retryable 503."""
    settings = settings_for(
        {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}", "redis_url": None},
        sqlite_busy_timeout_ms=1000,
    )
    app, api = await start_api(settings)
    async with app.router.lifespan_context(app), api.client:
        svc = api.svc
        order: list[int] = []

        async def write(turn: int) -> None:
            async with svc.engine.begin() as conn:
                await conn.execute(text("SELECT 1"))
                order.append(turn)

        async with svc.engine.begin():  # the writers' connection, held
            queued = []
            for turn in range(5):
                queued.append(asyncio.create_task(write(turn)))
                await asyncio.sleep(0.02)  # each in the queue before the next comes
            async with svc.reader.connect() as conn:  # not behind the writers
                assert await asyncio.wait_for(conn.scalar(text("SELECT 1")), 0.5) == 1
            assert order == []
        await asyncio.gather(*queued)
        assert order == [0, 1, 2, 3, 4]

        async with svc.engine.begin():  # held past the busy timeout this time
            r = await api.client.post(
                "/api/v1/accounts",
                json={"email": api.new_email("queued"), "password": PASSWORD},
            )
        await assert_retryable_then_through(api, r, ("QueuePool", "TimeoutError"))


async def assert_retryable_then_through(
    api: Api, refused: httpx.Response, leaks: tuple[str, ...]
) -> None:
    """A sign-up refused for a busy SQLite is a retryable 503 naming nothing inside; once the
    database is free, the same request goes through."""
    assert_problem(refused, 503, "unavailable")
    assert refused.headers["retry-after"] == "1"
    for leak in ("sqlite", "Traceback", *leaks):
        assert leak not in refused.text
    r = await api.client.post(
        "/api/v1/accounts", json={"email": api.new_email("after"), "password": PASSWORD}
    )
    assert r.status_code == 201, r.text

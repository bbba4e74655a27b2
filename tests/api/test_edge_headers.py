"""What the edge middleware adds to every answer (docs/operations.md "HTTP details"): a request
id, the CSP of the route's group, Referrer-Policy, and CORS for the configured origins only,
whose preflights never count against the per-IP limit."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from conftest import Api, start_api
from conftest import test_settings as settings_for
from support import assert_problem

APP_ORIGIN = "https://app.example.com"
PATHS = ("/healthz", "/api/v1/me", "/nope", "/openapi.json", "/docs", "/api/v1/auth/login")


@pytest_asyncio.fixture(scope="module")
async def edge_api(backend: dict[str, Any]) -> AsyncIterator[Api]:
    """CORS for one origin, and a per-IP limit small enough to reach."""
    settings = settings_for(backend, cors_origins=APP_ORIGIN, ip_rate_limit="5/minute")
    app, api = await start_api(settings)
    async with app.router.lifespan_context(app), api.client:
        yield api


async def test_every_answer_has_a_fresh_request_id(edge_api: Api) -> None:
    seen = set()
    for path in PATHS:
        r = await edge_api.client.get(path)
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), path
        seen.add(r.headers["x-request-id"])
    assert len(seen) == len(PATHS)


async def test_a_clients_short_request_id_is_kept_and_anything_else_replaced(
    edge_api: Api,
) -> None:
    for kept in ("abc-123", "trace.0001:span_7", "x" * 64):
        r = await edge_api.client.get("/healthz", headers={"X-Request-ID": kept})
        assert r.headers["x-request-id"] == kept
    replaced_ids: tuple[str | bytes, ...] = ("x" * 65, "a b", "<script>", "id\x7f", "ü".encode())
    for replaced in replaced_ids:
        r = await edge_api.client.get("/healthz", headers={"X-Request-ID": replaced})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), replaced


async def test_csp_and_referrer_policy_on_every_group(edge_api: Api) -> None:
    for path in PATHS:
        r = await edge_api.client.get(path)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert r.headers["referrer-policy"] == "no-referrer", path
        if path != "/docs":
            assert csp.startswith("default-src 'none'"), path
            assert "script-src" not in csp, path


async def test_cors_answers_the_configured_origin_only(edge_api: Api) -> None:
    r = await edge_api.client.get("/healthz", headers={"Origin": APP_ORIGIN})
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    assert r.headers["vary"] == "Origin"
    for other in ("https://evil.example.com", "null", APP_ORIGIN + ".evil.com", "*"):
        r = await edge_api.client.get("/healthz", headers={"Origin": other})
        assert "access-control-allow-origin" not in r.headers, other


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-csrf-token",
    }


async def test_preflights_are_answered_for_the_origin_and_never_counted(
    backend: dict[str, Any],
) -> None:
    """Far more preflights than the per-IP limit (5 a minute here): each answered, none
    counted; then the limit still has all of its budget for real requests."""
    # A key space of its own under the module's: the other apps here count from this address.
    prefix = backend.get("redis_key_prefix", "cloudmfa:") + "preflight:"
    settings = settings_for(
        backend, cors_origins=APP_ORIGIN, ip_rate_limit="5/minute", redis_key_prefix=prefix
    )
    app, edge_api = await start_api(settings)
    async with app.router.lifespan_context(app), edge_api.client:
        await _preflights_are_not_counted(edge_api)


async def _preflights_are_not_counted(edge_api: Api) -> None:
    for _ in range(12):
        r = await edge_api.client.options("/api/v1/auth/login", headers=preflight(APP_ORIGIN))
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "x-csrf-token" in r.headers["access-control-allow-headers"]
        assert "x-cloudmfa-session" in r.headers["access-control-allow-headers"]
    # A preflight from an origin not on the list gets no CORS answer (the browser then
    # refuses the call), and is not counted either.
    for _ in range(12):
        r = await edge_api.client.options(
            "/api/v1/auth/login", headers=preflight("https://evil.example.com")
        )
        assert "access-control-allow-origin" not in r.headers
        assert r.status_code != 429
    statuses = [
        (await edge_api.client.post("/api/v1/auth/login", json={})).status_code for _ in range(6)
    ]
    assert statuses[:5] == [422] * 5
    assert statuses[5] == 429


async def test_no_cors_without_configured_origins(backend: dict[str, Any]) -> None:
    app, api = await start_api(settings_for(backend))
    async with app.router.lifespan_context(app), api.client:
        r = await api.client.options("/api/v1/auth/login", headers=preflight(APP_ORIGIN))
        assert "access-control-allow-origin" not in r.headers
        assert_problem(r, 405, "method_not_allowed")


async def test_the_access_line_names_the_request_and_cannot_be_forged(
    edge_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    user, headers = await edge_api.signed_in("access-line")
    with caplog.at_level(logging.INFO, logger="cloudmfa.access"):
        await edge_api.client.get("/api/v1/me", headers={**headers, "X-Request-ID": "line-1"})
        await edge_api.client.get("/nope%0A2026-01-01 [info] forged%0D", params={"t": "secret"})
    me, forged = (r for r in caplog.records if r.name == "cloudmfa.access")
    assert (me.route, me.status, me.user_id) == ("/api/v1/me", 200, user["id"])
    assert me.latency_ms >= 0
    assert forged.path == "/nope%0A2026-01-01%20[info]%20forged%0D"
    assert "\n" not in forged.path and "secret" not in forged.path
    assert (forged.route, forged.status, forged.user_id) == ("unmatched", 404, None)

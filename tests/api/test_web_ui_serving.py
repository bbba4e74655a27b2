"""The web UI as the service serves it (api/web.py): the page at `/` and at any deep link a
browser asks for, a fresh CSP nonce with each answer, hashed assets cached for good, and the
service's own paths untouched by the fallback. Runs against a small build made here, so it
holds whether or not `make web` has run."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from cloudmfa.api.web import ASSET_CACHE
from cloudmfa.app import create_app
from conftest import test_settings as make_settings
from support import assert_problem

PAGE = (
    '<!doctype html><html><head><meta name="csp-nonce" content="__CSP_NONCE__">'
    '<script type="module" src="/assets/index-abc123.js"></script></head>'
    '<body><div id="root"></div></body></html>'
)
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(tmp_path_factory.mktemp("web_dist"))
    (root / "assets").mkdir()
    (root / "index.html").write_text(PAGE)
    (root / "assets" / "index-abc123.js").write_text("console.log('ui')")
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return root


@pytest_asyncio.fixture(scope="module")
async def client(backend: dict[str, Any], dist: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(backend), web_dist=dist)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


def nonce_of(r: httpx.Response) -> str:
    match = re.search(r'name="csp-nonce" content="([^"]+)"', r.text)
    assert match, r.text
    return match.group(1)


@pytest.mark.parametrize(
    "path", ["/", "/sign-in", "/security", "/admin/users/42", "/reset-password"]
)
async def test_a_browser_gets_the_page_at_any_ui_path(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path, headers=BROWSER)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in r.text
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_the_page_has_a_strict_csp_with_a_fresh_nonce_each_time(
    client: httpx.AsyncClient,
) -> None:
    first, second = [await client.get("/", headers=BROWSER) for _ in range(2)]
    nonces = [nonce_of(first), nonce_of(second)]
    assert nonces[0] != nonces[1]
    assert "__CSP_NONCE__" not in first.text
    for r, nonce in zip((first, second), nonces, strict=True):
        csp = dict(
            part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";")
        )
        assert csp["default-src"] == "'none'"
        assert csp["script-src"] == "'self'"  # no inline script, no eval
        assert csp["style-src"] == f"'self' 'nonce-{nonce}'"
        assert csp["frame-ancestors"] == "'none'"
        assert csp["connect-src"] == "'self'"
        assert "unsafe" not in r.headers["content-security-policy"]


async def test_hashed_assets_are_cached_for_good(client: httpx.AsyncClient) -> None:
    r = await client.get("/assets/index-abc123.js")
    assert r.status_code == 200
    assert r.headers["cache-control"] == ASSET_CACHE
    assert "javascript" in r.headers["content-type"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_a_missing_asset_is_a_404_not_the_page(client: httpx.AsyncClient) -> None:
    for path in ("/assets/index-old999.js", "/assets/%2e%2e/index.html", "/assets/..%2findex.html"):
        r = await client.get(path, headers=BROWSER)
        assert r.status_code == 404, path
        assert "<div" not in r.text
        assert "cache-control" not in r.headers or "immutable" not in r.headers["cache-control"]


async def test_a_top_level_file_of_the_build_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/favicon.svg")
    assert r.status_code == 200
    assert r.text.startswith("<svg")


@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/api/v2/accounts", "/.well-known/nope", "/metricsx", "/docs/x"]
)
async def test_service_paths_never_fall_back_to_the_page(
    client: httpx.AsyncClient, path: str
) -> None:
    assert_problem(await client.get(path, headers=BROWSER), 404, "not_found")


async def test_service_routes_keep_their_own_answers(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json", headers=BROWSER)).json()["openapi"]
    assert "swagger" in (await client.get("/docs", headers=BROWSER)).text.lower()
    assert (await client.get("/healthz", headers=BROWSER)).json() == {"status": "ok"}
    assert (await client.get("/.well-known/jwks.json", headers=BROWSER)).json()["keys"]
    r = await client.get("/api/v1/me", headers=BROWSER)
    assert_problem(r, 401, "invalid_token")


async def test_api_clients_and_other_methods_still_get_problems(
    client: httpx.AsyncClient,
) -> None:
    # No `text/html` in Accept: an API client's unknown path is the 404 problem it always was.
    assert_problem(await client.get("/nope"), 404, "not_found")
    assert_problem(
        await client.get("/nope", headers={"Accept": "application/json"}), 404, "not_found"
    )
    assert_problem(await client.post("/security", headers=BROWSER), 404, "not_found")


async def test_without_a_build_the_service_is_an_api_only(
    backend: dict[str, Any], tmp_path: Path
) -> None:
    app = create_app(make_settings(backend), web_dist=tmp_path / "absent")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            assert_problem(await c.get("/", headers=BROWSER), 404, "not_found")
            assert (await c.get("/healthz")).status_code == 200

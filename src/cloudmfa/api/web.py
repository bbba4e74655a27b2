"""The web UI: the static files `make web` builds into the package (``web_dist/``), served at `/`.

- Hashed assets under `/assets/` are cached for a year (`immutable`): a new build gives them new
  names, so no cache ever serves a stale one.
- Any other GET that a browser makes for a page (its `Accept` names `text/html`) and that no
  route answers gets `index.html`, so a deep link or a reload of `/security` works (the UI routes
  in the browser). API clients asking for an unknown path still get the 404 problem, and the
  service's own paths (`/api/`, `/docs`, `/openapi.json`, `/metrics`, `/healthz`, `/readyz`,
  `/.well-known/`) never fall back to the page.
- The page carries a strict Content-Security-Policy: scripts only from this origin, no inline
  script at all; styles from this origin plus the `<style>` elements the component library
  writes at run time, which carry a fresh per-response nonce (put into the page's
  `csp-nonce` meta element, from where the UI hands it to the library).

Without a build (a checkout where `make web` has not run) the service runs as an API only.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("cloudmfa.api")

WEB_DIST = Path(__file__).parents[1] / "web_dist"
NONCE_PLACEHOLDER = "__CSP_NONCE__"
# Paths that belong to the service, never to the UI, even when no route matches.
RESERVED_PREFIXES = (
    "/api/",
    "/.well-known/",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
    "/assets/",
)
ASSET_CACHE = "public, max-age=31536000, immutable"


def content_security_policy(nonce: str) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            f"style-src 'self' 'nonce-{nonce}'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class _ImmutableAssets(StaticFiles):
    """StaticFiles whose answers may be cached for good (their names carry a content hash)."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        if response.status_code == 200:
            response.headers["Cache-Control"] = ASSET_CACHE
        return response


class _PageFallback:
    """The router's answer when no route matches: the UI's page for a browser's page request,
    a top-level file of the build (favicon) by name, else the router's own 404."""

    def __init__(self, dist: Path, not_found: ASGIApp) -> None:
        self.not_found = not_found
        self.page = (dist / "index.html").read_text(encoding="utf-8")
        self.top_level = {
            "/" + p.name: p for p in dist.iterdir() if p.is_file() and p.name != "index.html"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self._answer(scope)
        if response is None:
            await self.not_found(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _answer(self, scope: Scope) -> Response | None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return None
        path: str = scope["path"]
        if path.startswith(RESERVED_PREFIXES):
            return None
        file = self.top_level.get(path)
        if file is not None:
            return FileResponse(file, headers={"Cache-Control": "public, max-age=3600"})
        accept = dict(scope["headers"]).get(b"accept", b"")
        if b"text/html" not in accept:
            return None
        nonce = secrets.token_urlsafe(18)
        return Response(
            self.page.replace(NONCE_PLACEHOLDER, nonce),
            media_type="text/html",
            headers={
                "Content-Security-Policy": content_security_policy(nonce),
                # The page is tiny and names the current assets; always ask again.
                "Cache-Control": "no-cache",
                # (Referrer-Policy: no-referrer, which keeps a reset link's token out of
                # Referer, comes from the edge on every response.)
                "X-Frame-Options": "DENY",
                "Cross-Origin-Opener-Policy": "same-origin",
            },
        )


def install(app: FastAPI, dist: Path | None = WEB_DIST) -> bool:
    """Serve the built UI from ``dist``, if there is one; returns whether it is served."""
    if dist is None or not (dist / "index.html").is_file():
        log.info("no web UI build at %s: serving the API only (make web builds it)", dist)
        return False
    if (dist / "assets").is_dir():
        app.mount("/assets", _ImmutableAssets(directory=dist / "assets"), name="web-assets")
    app.router.default = _PageFallback(dist, app.router.default)
    return True

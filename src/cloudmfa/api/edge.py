"""The outermost layer of every request, as one pure-ASGI middleware: the request id (and the
access log line that names it), the per-IP limit (counted before anything reads the body), the
body size limit, CORS for the configured origins, security headers (CSP by route group),
metrics, and a last resort that turns any escaped exception into a bare problem.

One layer rather than one per concern: every ASGI layer costs every request a call, a wrapped
`send` and its own checks, and these all look at the same few things (path, method, headers).
Refusals are rendered by api/problems.py, like every other error.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudmfa import metrics as service_metrics
from cloudmfa.api.ip_limit import LIMITED, LimitedPath, count_request, limited_path
from cloudmfa.api.problems import as_error, problem_response
from cloudmfa.errors import InternalError, PayloadTooLarge, RateLimited
from cloudmfa.logs import REQUEST_ID, access_log
from cloudmfa.services import Services

log = logging.getLogger("cloudmfa.api")


# Set by `cloudmfa serve` for several workers: each worker then records into files there, and a
# scrape, answered by whichever worker, adds them all up (prometheus_client's multiprocess mode).
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# The `method` label takes these or OTHER: a client may send any token as a method, and each
# distinct label value would be a new time series kept for the life of the process.
_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cloudmfa_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cloudmfa_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        # Each label set's child, looked up once: `labels()` takes a lock and builds a key
        # on every call. Bounded: methods as above, route templates, statuses.
        self._counted: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[str, Histogram] = {}
        self._endpoint_paths: dict[object, str] = {}  # the framework's routes, found once

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        counter = self._counted.get((method, route, status))
        if counter is None:
            counter = self.requests.labels(method, route, str(status))
            self._counted[(method, route, status)] = counter
        counter.inc()
        histogram = self._timed.get(route)
        if histogram is None:
            histogram = self._timed[route] = self.latency.labels(route)
        histogram.observe(seconds)

    def exposition(self) -> bytes:
        """The text a Prometheus scrape reads: of every worker process when there are several
        (their files hold the service's own metrics too, cloudmfa/metrics.py)."""
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
            every_worker = CollectorRegistry()
            multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
            return generate_latest(every_worker)
        return generate_latest(self.registry) + service_metrics.exposition()

    def route_of(self, scope: Scope) -> str:
        """The label of the route that answered: an API route's template; for the framework's
        own routes (`/docs`, `/openapi.json`, …), which leave no route in the scope, the path
        of the route whose endpoint ran; `unmatched` for no route at all."""
        path = getattr(scope.get("route"), "path", None)
        if path:
            return str(path)
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "unmatched"
        label = self._endpoint_paths.get(endpoint)
        if label is None:
            routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
            label = next(
                (
                    str(route.path)
                    for route in routes
                    if endpoint in (getattr(route, "endpoint", None), getattr(route, "app", None))
                ),
                "unmatched",
            )
            self._endpoint_paths[endpoint] = label
        return label


_NOSNIFF = (b"x-content-type-options", b"nosniff")
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_NO_STORE = (b"cache-control", b"no-store")  # tokens and codes travel in /api answers
_NO_REFERRER = (b"referrer-policy", b"no-referrer")

# Content-Security-Policy by route group. The API's answers are JSON, never a page: nothing
# may load, frame or submit anything. The docs page loads Swagger UI's script and style from
# this service (`/docs/assets`, from the package) and the document from `/openapi.json`.
# A response that sets its own policy (the web UI's page, api/web.py) keeps it.
_API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
CSP_BY_GROUP = {"api": _API_CSP, "docs": _DOCS_CSP, "other": _API_CSP}


def route_group(path: str) -> str:
    """Which CSP (and caching) a path gets: `api` (/api/…), `docs` (/docs, its assets) or
    `other` (operations, the OpenAPI document, anything unknown)."""
    if path.startswith("/api/"):
        return "api"
    if path == "/docs" or path.startswith("/docs/"):
        return "docs"
    return "other"


def _security_headers(https: bool, group: str) -> tuple[tuple[bytes, bytes], ...]:
    return (
        _NOSNIFF,
        _NO_REFERRER,
        (b"content-security-policy", CSP_BY_GROUP[group].encode()),
        *([_HSTS] if https else []),
        *([_NO_STORE] if group == "api" else []),
    )


_SECURITY_HEADERS = {
    (https, group): _security_headers(https, group)
    for https in (False, True)
    for group in CSP_BY_GROUP
}

# A client's own X-Request-ID is kept when it is a short token (so it can be followed through
# its own logs); anything else is replaced, so a client cannot write arbitrary text into ours.
_CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")

# What a cross-origin page may send and read (CORS, for the origins configured only).
_CORS_ALLOW_HEADERS = b"authorization, content-type, x-cloudmfa-session, x-csrf-token, x-request-id"
_CORS_EXPOSE_HEADERS = b"retry-after, x-request-id"
_CORS_PREFLIGHT_MAX_AGE = b"600"


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        services: Services,
        max_body_bytes: int,
        metrics: Metrics,
        limited: tuple[LimitedPath, ...] = LIMITED,
        cors_origins: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.services = services
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.limited = limited
        self.too_large = f"The request body may be at most {max_body_bytes} bytes."
        self.cors_origins = frozenset(origin.encode() for origin in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answering = False
        request_id, origin = _request_id_and_origin(scope["headers"])
        request_id_token = REQUEST_ID.set(request_id)
        extra_headers = [
            *_SECURITY_HEADERS[scope.get("scheme") == "https", route_group(scope["path"])],
            (b"x-request-id", request_id.encode()),
        ]
        if origin is not None and origin in self.cors_origins:
            extra_headers += _cors_headers(origin)
            if _is_preflight(scope):
                extra_headers += _PREFLIGHT_HEADERS

        async def send_with_headers(message: Message) -> None:
            nonlocal status, answering
            if message["type"] == "http.response.start":
                status = message["status"]
                answering = True
                headers = message.get("headers", ())
                added = extra_headers
                if any(name.lower() == b"content-security-policy" for name, _ in headers):
                    # A response with a policy of its own (the web UI's page, whose policy
                    # carries a fresh style nonce) keeps it: a second one would be enforced too.
                    added = [h for h in extra_headers if h[0] != b"content-security-policy"]
                message = {**message, "headers": [*headers, *added]}
            await send(message)

        try:
            refusal = await self._refusal(scope, origin)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            else:
                await self.app(scope, self._bounded(receive), send_with_headers)
        except Exception as exc:
            error = as_error(exc)
            if isinstance(error, InternalError):
                log.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            if not answering:
                await problem_response(error)(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            route = self.metrics.route_of(scope)
            self.metrics.observe(scope["method"], route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra=_access_fields(scope, route, status, elapsed))
            REQUEST_ID.reset(request_id_token)

    async def _refusal(self, scope: Scope, origin: bytes | None) -> Response | None:
        """The answer to a request refused before it reaches a route: over the per-IP limit
        (counted first, so every request counts), or a body declared too large. A CORS
        preflight from an allowed origin is answered here, uncounted: it runs no handler."""
        if origin is not None and origin in self.cors_origins and _is_preflight(scope):
            return Response(status_code=204)
        limited = limited_path(scope, self.limited)
        if limited is not None:
            try:
                await count_request(self.services, scope)
            except RateLimited as exc:
                scope["route"] = limited  # the route it is counted under in the metrics
                return problem_response(exc)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return problem_response(PayloadTooLarge(self.too_large))
        return None

    def _bounded(self, receive: Receive) -> Receive:
        """`receive`, refusing a body that grows past the limit as it arrives (a chunked body
        declares no length to check beforehand)."""
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the framework's body reading, which passes an HTTPException
                    # through to the problem handler (any other exception would become a 400).
                    raise HTTPException(413, self.too_large)
            return message

        return bounded_receive


def _request_id_and_origin(headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes | None]:
    """The request's id (the client's, when it is a short token; else a fresh one) and its
    Origin header: one pass over the headers for both."""
    request_id: str | None = None
    origin: bytes | None = None
    for name, value in headers:
        if name == b"x-request-id":
            if _CLIENT_REQUEST_ID.fullmatch(value):
                request_id = value.decode()
        elif name == b"origin":
            origin = value
    return request_id or os.urandom(16).hex(), origin


def _is_preflight(scope: Scope) -> bool:
    return scope["method"] == "OPTIONS" and any(
        name == b"access-control-request-method" for name, _ in scope["headers"]
    )


def _cors_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", _CORS_EXPOSE_HEADERS),
        (b"vary", b"Origin"),
    ]


_PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"DELETE, GET, POST"),
    (b"access-control-allow-headers", _CORS_ALLOW_HEADERS),
    (b"access-control-max-age", _CORS_PREFLIGHT_MAX_AGE),
]


def _access_fields(scope: Scope, route: str, status: int, elapsed: float) -> dict[str, Any]:
    """The access line's fields: never the query string (nothing secret belongs there, but a
    client may put it there anyway), nor any header or body."""
    client = scope.get("client")
    # The path as sent, still percent-encoded: decoded, a %0A would start a forged line in
    # the console format.
    raw_path: bytes | None = scope.get("raw_path")
    return {
        "method": scope["method"],
        "path": raw_path.decode("latin-1") if raw_path else scope["path"],
        "route": route,
        "status": status,
        "latency_ms": round(elapsed * 1000, 2),
        "user_id": scope.get("state", {}).get("user_id"),
        "client": client[0] if client else None,
    }


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

"""The outermost layer of every request, as one pure-ASGI middleware: the per-IP limit (counted
before anything reads the body), the body size limit, security headers, metrics, and a last
resort that turns any escaped exception into a bare problem.

One layer rather than one per concern: every ASGI layer costs every request a call, a wrapped
`send` and its own checks, and these all look at the same few things (path, method, headers).
Refusals are rendered by api/problems.py, like every other error.
"""

from __future__ import annotations

import logging
import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudmfa.api.ip_limit import LIMITED, LimitedPath, count_request, limited_path
from cloudmfa.api.problems import as_error, problem_response
from cloudmfa.errors import InternalError, PayloadTooLarge, RateLimited
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
        """The text a Prometheus scrape reads: of every worker process when there are several."""
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
            every_worker = CollectorRegistry()
            multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
            return generate_latest(every_worker)
        return generate_latest(self.registry)


_NOSNIFF = (b"x-content-type-options", b"nosniff")
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_NO_STORE = (b"cache-control", b"no-store")  # tokens and codes travel in /api answers


def _security_headers(https: bool, api: bool) -> tuple[tuple[bytes, bytes], ...]:
    return (_NOSNIFF, *([_HSTS] if https else []), *([_NO_STORE] if api else []))


_SECURITY_HEADERS = {
    (https, api): _security_headers(https, api) for https in (False, True) for api in (False, True)
}


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        services: Services,
        max_body_bytes: int,
        metrics: Metrics,
        limited: tuple[LimitedPath, ...] = LIMITED,
    ) -> None:
        self.app = app
        self.services = services
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.limited = limited
        self.too_large = f"The request body may be at most {max_body_bytes} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answering = False
        extra_headers = _SECURITY_HEADERS[
            scope.get("scheme") == "https", scope["path"].startswith("/api/")
        ]

        async def send_with_headers(message: Message) -> None:
            nonlocal status, answering
            if message["type"] == "http.response.start":
                status = message["status"]
                answering = True
                message = {**message, "headers": [*message.get("headers", ()), *extra_headers]}
            await send(message)

        try:
            refusal = await self._refusal(scope)
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
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)

    async def _refusal(self, scope: Scope) -> Response | None:
        """The answer to a request refused before it reaches a route: over the per-IP limit
        (counted first, so every request counts), or a body declared too large."""
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


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

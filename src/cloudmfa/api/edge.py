"""The outermost layer of every request: a body size limit, security headers, metrics, and a
last-resort handler that turns any escaped exception into a bare 500 problem."""

from __future__ import annotations

import json
import logging
import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudmfa.api.problems import PROBLEM_MEDIA_TYPE, problem_body

log = logging.getLogger("cloudmfa.api")


# Set by `cloudmfa serve` for several workers: each worker then records into files there, and a
# scrape, answered by whichever worker, adds them all up (prometheus_client's multiprocess mode).
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


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

    def exposition(self) -> bytes:
        """The text a Prometheus scrape reads: of every worker process when there are several."""
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
            every_worker = CollectorRegistry()
            multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
            return generate_latest(every_worker)
        return generate_latest(self.registry)


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response = {"status": 500, "started": False}
        extra_headers = [(b"x-content-type-options", b"nosniff")]
        if scope.get("scheme") == "https":
            extra_headers.append(
                (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
            )
        if scope.get("path", "").startswith("/api/"):
            # Tokens and codes travel in these answers; no cache may keep any of them.
            extra_headers.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
                message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
            await send(message)

        too_large = f"The request body may be at most {self.max_body_bytes} bytes."
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _send_problem(send_with_headers, 413, "payload_too_large", too_large)
            self._observe(scope, 413, started)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the framework's body reading, which passes it through to
                    # the problem handler (a chunked body has no Content-Length to check).
                    raise HTTPException(413, too_large)
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception:
            log.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"))
            if not response["started"]:
                await _send_problem(
                    send_with_headers, 500, "internal_error", "Something went wrong on our side."
                )
        self._observe(scope, int(response["status"]), started)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        template: str = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(scope.get("method", ""), template, str(status)).inc()
        self.metrics.latency.labels(template).observe(time.perf_counter() - started)


async def _send_problem(send: Send, status: int, code: str, detail: str) -> None:
    title = {413: "The request body is too large", 500: "Internal error"}[status]
    body = json.dumps(problem_body(status, code, title, detail)).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

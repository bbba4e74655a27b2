"""The per-client-IP limit of API.md "Throttling": every request to `/api/v1/auth/*` and
`/api/v1/accounts` counts, whatever its body.

A middleware rather than a router dependency, because FastAPI reads and validates a request's
body before it solves the route's dependencies: a request whose JSON did not parse was answered
422 without ever being counted. Here a request is counted before anything reads its body, in
one place for the router and the fast path alike. It runs inside EdgeMiddleware, so a refusal
still gets the security headers and is counted in the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from cloudmfa.api.deps import request_info, services_of
from cloudmfa.api.problems import answer_error
from cloudmfa.errors import RateLimited
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.throttling import record_rate_limited
from cloudmfa.services import Services


@dataclass(frozen=True, slots=True)
class LimitedPath:
    """A path, or with a trailing `/*` every path under it, that the limit covers. It is also
    the route a refused request is counted under in the metrics, since it never reaches one."""

    path: str

    def covers(self, path: str) -> bool:
        if self.path.endswith("/*"):
            return path.startswith(self.path[:-1])
        return path == self.path or path.startswith(self.path + "/")


LIMITED = (LimitedPath("/api/v1/auth/*"), LimitedPath("/api/v1/accounts"))


class IpLimit:
    def __init__(self, app: ASGIApp, *, paths: tuple[LimitedPath, ...] = LIMITED) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limited = None
        if scope["type"] == "http":
            limited = next((p for p in self.paths if p.covers(scope["path"])), None)
        if limited is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            await limit_ip(services_of(request), request_info(request))
        except Exception as exc:
            scope["route"] = limited
            response = await answer_error(request, exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def limit_ip(svc: Services, info: RequestInfo) -> None:
    """Count one request from the client's address; RateLimited (audited once per window)
    when it is over the limit."""
    try:
        await svc.ip_limiter.hit(info.ip or "unknown")
    except RateLimited as exc:
        await record_rate_limited(svc, info, None, exc)
        raise

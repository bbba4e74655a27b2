"""The per-client-IP limit of API.md "Throttling": every request to `/api/v1/auth/*` and
`/api/v1/accounts` counts, whatever its body.

Counted by the edge middleware (api/edge.py) rather than a router dependency, because FastAPI
reads and validates a request's body before it solves the route's dependencies: a request whose
JSON did not parse was answered 422 without ever being counted. There a request is counted
before anything reads its body.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import Scope

from cloudmfa.api.deps import request_info
from cloudmfa.errors import RateLimited
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


def limited_path(scope: Scope, paths: tuple[LimitedPath, ...] = LIMITED) -> LimitedPath | None:
    """The limited path this request falls under, or None when it is not counted.

    A CORS preflight (Fetch §3.2.2: OPTIONS with Access-Control-Request-Method) is not counted:
    a browser sends one on its own before a cross-origin call, which would otherwise halve a
    web client's budget, and it reads no body and runs no handler."""
    path: str = scope["path"]
    limited = next((p for p in paths if p.covers(path)), None)
    if limited is not None and scope["method"] == "OPTIONS" and _asks_preflight(scope):
        return None
    return limited


def _asks_preflight(scope: Scope) -> bool:
    return any(name == b"access-control-request-method" for name, _ in scope["headers"])


async def count_request(svc: Services, scope: Scope) -> None:
    """Count one request from the client's address; RateLimited (audited once per window)
    when it is over the limit."""
    client = scope.get("client")
    try:
        await svc.ip_limiter.hit((client[0] if client else None) or "unknown")
    except RateLimited as exc:
        await record_rate_limited(svc, request_info(Request(scope)), None, exc)
        raise

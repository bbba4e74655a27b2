"""RFC 9457 problem details: the one place where errors become HTTP answers.

Every error is first made a `CloudMFAError` (errors.py names every code, title and status),
then rendered by `problem_response`; the exception handlers installed on the app and the edge
middleware in front of it (api/edge.py) both answer that way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cloudmfa import metrics
from cloudmfa.errors import (
    CloudMFAError,
    InternalError,
    MethodNotAllowed,
    RateLimited,
    Unavailable,
    ValidationFailed,
    for_http_status,
)
from cloudmfa.store.outages import is_outage

log = logging.getLogger("cloudmfa.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(
    error: CloudMFAError, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The answer for ``error``: its status, a problem+json body, and the headers its status
    calls for (Retry-After on a refusal with a wait, WWW-Authenticate on a 401)."""
    answer_headers = dict(headers or {})
    if isinstance(error, RateLimited):
        metrics.rate_limited(error.kind)
    if error.retry_after is not None:
        answer_headers["Retry-After"] = str(max(1, error.retry_after))
    if error.status == 401:
        answer_headers["WWW-Authenticate"] = "Bearer"
    body = {
        "type": f"urn:cloudmfa:problem:{error.code}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    return JSONResponse(
        body, status_code=error.status, media_type=PROBLEM_MEDIA_TYPE, headers=answer_headers
    )


def as_error(exc: Exception) -> CloudMFAError:
    """What an exception means to a client. A store that does not answer in time (unreachable,
    or a SQLite write lock held past the busy timeout) is worth a retry, unlike a bug (which
    the caller logs); nothing of either is shown."""
    if isinstance(exc, CloudMFAError):
        return exc
    if is_outage(exc):
        log.warning("storage unavailable: %s", type(exc).__name__)
        return Unavailable(
            "The database or the shared store is busy or unreachable; try again shortly.",
            retry_after=1,
        )
    return InternalError("Something went wrong on our side.")


async def _known_error(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(as_error(exc))


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        # The message only, never the rejected input (it may be a password).
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "The request is not valid."


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(ValidationFailed(_describe_validation(exc)))


async def _framework_error(request: Request, exc: Exception) -> JSONResponse:
    """The router's own refusals (unknown route, wrong method, body over the limit, a body it
    could not parse), as the errors errors.py maps their statuses to."""
    assert isinstance(exc, StarletteHTTPException)
    error = for_http_status(exc.status_code)(exc.detail if isinstance(exc.detail, str) else None)
    headers = dict(exc.headers or {})
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return problem_response(error, headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")  # what Allow may name


def _allowed_methods(request: Request) -> str:
    """Every method the path supports (RFC 9110 §15.5.6). The router's own 405 names only the
    methods of the first route whose path matched, though FastAPI makes one route per method
    declared (GET and POST /me/factors are two routes): each method is asked of the routes."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(CloudMFAError, _known_error)
    app.add_exception_handler(OperationalError, _known_error)
    app.add_exception_handler(ConnectionError, _known_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _framework_error)

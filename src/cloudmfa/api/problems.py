"""RFC 9457 problem details: the one place where errors become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from cloudmfa.errors import CloudMFAError

log = logging.getLogger("cloudmfa.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Statuses the framework itself raises, with the stable code each gets.
_FRAMEWORK_CODES: dict[int, tuple[str, str]] = {
    400: ("validation_error", "The request could not be parsed"),
    401: ("invalid_token", "Authentication required"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "The request body is too large"),
    415: ("validation_error", "Unsupported media type"),
}


def problem_body(status: int, code: str, title: str, detail: str) -> dict[str, Any]:
    return {
        "type": f"urn:cloudmfa:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, title, detail),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def _cloudmfa_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudMFAError)
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, exc.retry_after))
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem_response(exc.status, exc.code, exc.title, exc.detail, headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        # The message only, never the rejected input (it may be a password).
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "The request is not valid."


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(
        422, "validation_error", "The request is not valid", _describe_validation(exc)
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 400:
        # Unparseable bodies (bad JSON, bad UTF-8, absurd nesting) are validation errors too.
        status = 422
    code, title = _FRAMEWORK_CODES.get(status, ("http_error", "HTTP error"))
    if status == 422:
        code, title = "validation_error", "The request is not valid"
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return problem_response(status, code, title, detail, headers)


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


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    # The database did not answer in time: unreachable, or (SQLite) its write lock stayed
    # taken past the busy timeout. Worth a retry, unlike a bug; nothing of it is shown.
    log.warning("database unavailable: %s", type(exc).__name__)
    return problem_response(
        503,
        "unavailable",
        "The service is not available",
        "The database is busy or unreachable; try again shortly.",
        {"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(CloudMFAError, _cloudmfa_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(ConnectionError, _database_unavailable)


async def answer_error(request: Request, exc: Exception) -> Response:
    """The answer the app's exception handlers give for ``exc`` (looked up by its class
    hierarchy, as Starlette does), for code in front of FastAPI's own exception middleware
    (api/fast_path.py, api/ip_limit.py). What no handler takes is raised again, on to
    EdgeMiddleware's last-resort 500, as from a route."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(request, exc)
            return response
    raise exc

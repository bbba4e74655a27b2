"""A lean lane for the hottest JSON endpoint, beside FastAPI's router.

`POST /api/v1/auth/verify` is the one request every sign-in with a second factor makes, and it
is cheap in itself (a few Redis calls, one SQL statement, a signature). Under load, FastAPI's
request handling around it (exception middleware, routing through the included routers,
dependency solving, serialisation) cost about 15 % of the whole machine's work per request
(bench/README.md, "The fast path"). This middleware answers such routes itself, inside
EdgeMiddleware and the per-IP limit (body limit, security headers, metrics and the limit still
apply), and leaves every other request to FastAPI.

Nothing of the endpoint is written twice: the router module declares the route for FastAPI
(OpenAPI, and serving it when the fast path is off) and hands the same request model and
handler to a `FastRoute`. Errors become problems through the app's own exception handlers, so
the answers are the same either way; tests/api/test_fast_path.py holds the two side by side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cloudmfa.api.deps import request_info, services_of
from cloudmfa.api.problems import answer_error
from cloudmfa.flows.context import RequestInfo
from cloudmfa.services import Services

Handler = Callable[[Services, RequestInfo, Any], Awaitable[BaseModel]]


@dataclass(frozen=True, slots=True)
class FastRoute:
    """A JSON-in, JSON-out endpoint: validate the body, call the handler, dump the answer
    without its unset optional fields (as `response_model_exclude_none=True` does)."""

    method: str
    path: str  # also the `route` label of the metrics, as FastAPI's route would give it
    body: type[BaseModel]
    handler: Handler


class FastPath:
    def __init__(self, app: ASGIApp, *, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.routes = {(route.method, route.path): route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await _answer(route, request)
        except Exception as exc:
            response = await answer_error(request, exc)
        await response(scope, receive, send)


async def _answer(route: FastRoute, request: Request) -> Response:
    body = await _parse(route.body, request)
    result = await route.handler(services_of(request), request_info(request), body)
    return Response(result.model_dump_json(exclude_none=True), media_type="application/json")


async def _parse(model: type[BaseModel], request: Request) -> BaseModel:
    """The body as FastAPI takes it (strict content type): JSON only when the request says
    `application/json` or `application/*+json`."""
    raw = await request.body()
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
        )
    if not _is_json(request.headers.get("content-type", "")):
        # FastAPI validates such a body as bytes against the model; this is its error.
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise RequestValidationError(
            [{"type": "model_attributes_type", "loc": ("body",), "msg": msg}]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        # FastAPI's error locations start with "body"; the problem handler relies on it.
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        raise RequestValidationError(errors) from None


def _is_json(content_type: str) -> bool:
    maintype, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))

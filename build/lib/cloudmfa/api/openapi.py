"""The served OpenAPI document (`/openapi.json`, `/docs`).

FastAPI's document, completed with what holds for every route and that FastAPI cannot see in a
handler's signature: which operations need a session or the admin role (read from the route's
dependencies, so it cannot drift from them), the answers the edge gives before a route runs
(413, the per-IP 429), and the problem+json body of every error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from cloudmfa.api.deps import get_admin, get_principal_any
from cloudmfa.api.ip_limit import LIMITED
from cloudmfa.api.problems import PROBLEM_MEDIA_TYPE
from cloudmfa.api.schemas import Problem, problem_description

BEARER_SCHEME = "bearer"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

TAGS = [
    {"name": "accounts", "description": "Self sign-up."},
    {
        "name": "auth",
        "description": "Sign-in: a password, then a second factor; token refresh and logout. "
        "Every request here counts against the per-client-IP limit.",
    },
    {"name": "me", "description": "The signed-in user: profile, sessions, password, history."},
    {"name": "factors", "description": "The signed-in user's second factors and devices."},
    {
        "name": "admin",
        "description": "Users and the audit trail. Needs the admin role and a session that "
        "verified a second factor.",
    },
    {"name": "operations", "description": "Health, readiness, metrics, signing keys."},
]

DESCRIPTION = """\
Password plus second-factor authentication.

Authenticated operations take `Authorization: Bearer <access_token>`; those marked
`x-required-role: admin` also need the admin role. Every error is an RFC 9457 problem
(`application/problem+json`) whose `code` is a stable machine word.
"""


def operation_id(route: APIRoute) -> str:
    """The handler's name, as the operation id clients generate methods from."""
    return route.name.removesuffix("_route")


def install(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Serve the completed document; ``routers`` are those included in ``app``, whose routes
    it completes (read there: the app keeps included routers in a form of its own)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, routers)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI, routers: Sequence[APIRouter]) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=TAGS,
    )
    for route in (route for router in routers for route in router.routes):
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods or ():
                _complete(doc["paths"][route.path_format][method.lower()], route)
    components = doc.setdefault("components", {})
    components["securitySchemes"] = {
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from /api/v1/auth/login, /verify or /refresh.",
        }
    }
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema()
    # FastAPI's own validation error shapes: every 422 here is a Problem instead.
    for replaced in ("HTTPValidationError", "ValidationError"):
        schemas.pop(replaced, None)
    return doc


def _complete(operation: dict[str, Any], route: APIRoute) -> None:
    responses: dict[str, Any] = operation["responses"]
    extra: set[int] = set()
    needs = _dependency_calls(route.dependant)
    if get_principal_any in needs:
        operation["security"] = [{BEARER_SCHEME: []}]
        extra.add(401)
    if get_admin in needs:
        operation["x-required-role"] = "admin"
        extra.add(403)
    if any(limited.covers(route.path) for limited in LIMITED):
        extra.add(429)
    if "requestBody" in operation:
        extra |= {413, 422}
    for status in extra:
        responses.setdefault(str(status), {})
    for code, response in responses.items():
        if int(code) >= 400:
            response["description"] = problem_description(int(code))
            response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}
    operation["responses"] = dict(sorted(responses.items()))


def _dependency_calls(dependant: Dependant) -> set[Any]:
    calls: set[Any] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        calls.add(current.call)
        pending.extend(current.dependencies)
    return calls

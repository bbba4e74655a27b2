"""The served OpenAPI document (/openapi.json) stays complete and true (issue 12, part 5):
security on every operation that needs a session, admin-only operations marked, a summary and
description each, examples for request bodies, enums for factor types and error codes, the
Problem schema for every error, no leftover or name-mangled schemas.

Where the document makes a claim about behaviour (this operation needs a token, that one the
admin role), the claim is checked against the running app, not against the code that wrote it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest_asyncio

from cloudmfa.config import ALL_FACTOR_TYPES
from conftest import Api
from support import assert_problem

API_MD_CODES = {
    "validation_error",
    "weak_password",
    "breached_password",
    "email_taken",
    "invalid_credentials",
    "invalid_code",
    "invalid_token",
    "csrf_failed",
    "mfa_token_expired",
    "account_locked",
    "reauthentication_required",
    "mfa_enrollment_required",
    "forbidden",
    "not_found",
    "rate_limited",
    "delivery_failed",
    "unavailable",
}
FRAMEWORK_CODES = {"method_not_allowed", "payload_too_large", "internal_error"}
PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest_asyncio.fixture(scope="module")
async def doc(api: Api) -> dict[str, Any]:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return dict(doc["components"]["schemas"][ref.rsplit("/", 1)[1]])


def concrete(path: str) -> str:
    """The path with every parameter filled by an id that names nothing."""
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def test_bearer_is_the_security_scheme(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values() if s["type"] == "http"] == ["bearer"]


async def test_security_is_declared_exactly_where_a_token_is_required(
    doc: dict[str, Any], api: Api
) -> None:
    """Every operation is called without a token: those answering 401 invalid_token must
    declare the Bearer scheme (logout: or the browser's refresh cookie), and those declaring it
    must answer so."""
    schemes = doc["components"]["securitySchemes"]
    assert set(schemes) == {"bearer", "refreshCookie", "csrfHeader"}
    for method, path, operation in operations(doc):
        r = await api.client.request(method, concrete(path), json={})
        needs_token = r.status_code == 401 and r.json()["code"] == "invalid_token"
        security = operation.get("security", [])
        declared = {"bearer": []} in security and {} not in security
        assert declared == needs_token, (method, path, r.status_code, operation.get("security"))


async def test_admin_operations_are_marked_and_refused_to_other_users(
    doc: dict[str, Any], api: Api
) -> None:
    _, headers = await api.signed_in("not-admin")
    marked = [(m, p) for m, p, op in operations(doc) if op.get("x-required-role") == "admin"]
    assert {p for _, p in marked} == {p for p in doc["paths"] if p.startswith("/api/v1/admin/")}
    for method, path in marked:
        r = await api.client.request(method, concrete(path), headers=headers)
        assert_problem(r, 403, "forbidden")
        operation = doc["paths"][path][method]
        assert "403" in operation["responses"]
        assert "admin" in operation["description"].lower() or "admin" in operation["tags"]


def test_every_operation_has_a_summary_a_description_and_a_readable_id(
    doc: dict[str, Any],
) -> None:
    ids = []
    for method, path, operation in operations(doc):
        assert operation.get("summary", "").strip(), (method, path)
        assert operation.get("description", "").strip(), (method, path)
        assert re.fullmatch(r"[a-z][a-z_]*", operation["operationId"]), operation["operationId"]
        ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))
    assert len(ids) >= 28


def test_every_request_body_has_an_example_that_fits_its_schema(doc: dict[str, Any]) -> None:
    bodies = 0
    for method, path, operation in operations(doc):
        if "requestBody" not in operation:
            continue
        bodies += 1
        schema = resolve(doc, operation["requestBody"]["content"]["application/json"]["schema"])
        examples = schema.get("examples")
        assert examples, (method, path)
        for example in examples:
            assert set(schema.get("required", ())) <= set(example), (path, example)
            assert set(example) <= set(schema["properties"]), (path, example)
    assert bodies >= 8


def test_factor_types_are_an_enum_wherever_they_appear(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name in ("Factor", "LoginFactor", "EnrolResponse", "ActivateResponse"):
        assert set(schemas[name]["properties"]["type"]["enum"]) == set(ALL_FACTOR_TYPES), name
    assert set(ALL_FACTOR_TYPES) == {"totp", "sms", "email", "webauthn", "recovery"}
    enrollable = schemas["EnrolRequest"]["properties"]["type"]["enum"]
    assert set(enrollable) == set(ALL_FACTOR_TYPES) - {"recovery"}


def test_the_problem_code_is_an_enum_of_every_code(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert set(problem["properties"]["code"]["enum"]) == API_MD_CODES | FRAMEWORK_CODES


def test_every_error_response_is_a_problem(doc: dict[str, Any]) -> None:
    errors = 0
    for method, path, operation in operations(doc):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                errors += 1
                assert response["content"] == PROBLEM_CONTENT, (method, path, status)
    assert errors >= 80


def test_the_edge_answers_are_documented(doc: dict[str, Any]) -> None:
    """413 wherever there is a body; the per-IP 429 on every operation the limit covers."""
    for method, path, operation in operations(doc):
        responses = operation["responses"]
        if "requestBody" in operation:
            assert {"413", "422"} <= set(responses), (method, path)
        if path.startswith("/api/v1/auth/") or path == "/api/v1/accounts":
            assert "429" in responses, (method, path)


def test_no_leftover_or_name_mangled_schemas(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name in schemas:
        assert re.fullmatch(r"[A-Z][A-Za-z]*", name), name  # no module__Name, no -Input/-Output
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    text = str(doc)
    referenced = set(re.findall(r"#/components/schemas/(\w+)", text))
    assert referenced == set(schemas), set(schemas) ^ referenced

"""Property-based exploration of the HTTP API from its own OpenAPI document (schemathesis).

Every operation the app publishes at /openapi.json is called with generated data, both data that
fits the schema and data that does not, three ways: without credentials, as a signed-up user and
as an administrator. Whatever comes back must not be a 5xx, and every error must be an RFC 9457
problem (API.md "Conventions").

The app is reached over ASGI. Schemathesis owns its lifespan: it starts it on its own event-loop
thread when the first request is sent (and its pytest plugin ends it after each test), so every
request, and the database and Redis connections it opens, lives on that one loop. The users are
therefore signed up and logged in through schemathesis's ASGI client too; the administrator is
made with the command-line flow (``create_admin``) on separate services over the same database.

Each operation gets its own Hypothesis run built from ``operation.as_strategy()``: schemathesis's
lazy pytest loader (``schemathesis.pytest.from_fixture``) cannot run on pytest 9.2, whose nodes
no longer have the ``_nodeid`` attribute it rewrites. Bounded and reproducible: derandomised,
no example database, a few examples per operation and mode.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import hypothesis
import pyotp
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client

from cloudmfa.flows.accounts import create_admin
from cloudmfa.services import Services
from conftest import PASSWORD, bearer, start_api
from conftest import test_settings as make_settings

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("CLOUDMFA_FUZZ_EXAMPLES", "20"))  # per operation and mode
PROBLEM_MEMBERS = ("type", "title", "status", "detail", "code")

HYPOTHESIS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def assert_problem(status: int, content_type: str, content: bytes) -> None:
    """An error answer is application/problem+json with the five members (API.md)."""
    media_type = content_type.split(";")[0].strip().lower()
    assert media_type == "application/problem+json", (
        f"{status} answered with Content-Type {content_type!r}"
    )
    try:
        body = json.loads(content)
    except ValueError:
        raise AssertionError(f"the {status} problem body is not JSON") from None
    assert isinstance(body, dict), "the problem body is not a JSON object"
    missing = [m for m in PROBLEM_MEMBERS if m not in body]
    assert not missing, f"the problem lacks {', '.join(missing)}: {body}"
    assert body["status"] == status, f"its status member is {body['status']!r}"
    for member in ("type", "title", "detail", "code"):
        assert isinstance(body[member], str) and body[member], f"{member} is {body[member]!r}"


@schemathesis.check
def problem_details(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx and 5xx answer is an RFC 9457 problem."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    assert_problem(response.status_code, content_type, response.content)


CHECKS = [not_a_server_error, problem_details]


@pytest.fixture(scope="module")
async def fuzz_app(backend: dict[str, Any]) -> AsyncIterator[Any]:
    app, api = await start_api(make_settings(backend))
    await api.client.aclose()  # requests go through schemathesis's ASGI client instead
    yield app


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def _sign_up(app: Any, tag: str) -> str:
    email = f"fuzz-{tag}-{uuid.uuid4().hex[:8]}@example.com"
    with get_client(app) as client:
        r = client.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return email


def _log_in(app: Any, email: str) -> str:
    with get_client(app) as client:
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture(scope="module")
async def admin_email(backend: dict[str, Any]) -> str:
    """An administrator made the way `cloudmfa create-admin` makes one."""
    email = f"fuzz-admin-{uuid.uuid4().hex[:8]}@example.com"
    svc = Services.build(make_settings(backend))
    try:
        result = await create_admin(svc, email=email, password=PASSWORD)
    finally:
        await svc.close()
    assert result.created and result.user.is_admin
    return email


def _log_in_with_totp(app: Any, email: str) -> str:
    """A session that verified a second factor, which administration needs: a TOTP factor
    enrolled and activated from a password-only session, then a sign-in with it."""
    clock = app.state.services.clock
    with get_client(app) as client:
        password_only = bearer(_log_in(app, email))
        r = client.post("/api/v1/me/factors", json={"type": "totp"}, headers=password_only)
        assert r.status_code == 201, r.text
        factor = r.json()
        totp = pyotp.TOTP(factor["secret"])
        r = client.post(
            f"/api/v1/me/factors/{factor['id']}/activate",
            json={"code": totp.at(clock.now())},
            headers=password_only,
        )
        assert r.status_code == 200, r.text
        clock.advance(seconds=30)  # each time step is accepted once
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        r = client.post(
            "/api/v1/auth/verify",
            json={
                "mfa_token": r.json()["mfa_token"],
                "factor_id": factor["id"],
                "code": totp.at(clock.now()),
            },
        )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def tokens(fuzz_app: Any, admin_email: str) -> dict[str, str]:
    """Role → access token of a live session, opened before any exploration (which may well
    trip a per-account throttle with wrong current passwords, so no later login is relied on)."""
    user_email = _sign_up(fuzz_app, "user")
    found = {
        "user": _log_in(fuzz_app, user_email),
        "admin": _log_in_with_totp(fuzz_app, admin_email),
    }
    for role, token in found.items():
        with get_client(fuzz_app) as client:
            me = client.get("/api/v1/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert ("admin" in me.json()["roles"]) == (role == "admin")
    return found


def modes_for(operation: Any) -> list[GenerationMode]:
    """Negative data needs something typed to break: a body or query parameters."""
    if operation.body or operation.query:
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def explore(schema: Any, call: Callable[[Any], Any]) -> dict[str, set[int]]:
    """Run ``call`` on generated cases of every operation; report every operation that fails.

    Returns the statuses seen per operation label."""
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    for operation in operations:
        for mode in modes_for(operation):

            @HYPOTHESIS
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = call(case)
                seen.setdefault(case.operation.label, set()).add(response.status_code)

            try:
                run()
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid (a bare string path id)
            except Exception as exc:  # noqa: BLE001 - collected, then reported together
                failures.append(f"--- {operation.label} ({mode.value}) ---\n{exc}")
    assert not failures, "\n\n".join(failures)
    return seen


@pytest.mark.parametrize("role", ["user", "admin"])
def test_authenticated_calls_answer_problems_never_5xx(
    fuzz_schema: Any, fuzz_app: Any, tokens: dict[str, str], role: str
) -> None:
    def call(case: Any) -> Any:
        token = tokens[role]
        if case.operation.path == "/api/v1/auth/logout":
            # Logging out ends the session: each such call ends a throwaway one of its own.
            token = _log_in(fuzz_app, _sign_up(fuzz_app, "logout"))
        return case.call_and_validate(headers=bearer(token), checks=CHECKS)

    seen = explore(fuzz_schema, call)
    # The session stayed usable throughout, so the handlers behind authentication were reached.
    with get_client(fuzz_app) as client:
        still = client.get("/api/v1/me", headers=bearer(tokens[role]))
    assert still.status_code == 200, still.text
    assert 200 in seen["GET /api/v1/me"], seen
    assert 200 in seen["GET /api/v1/me/sessions"], seen
    admin_list = seen["GET /api/v1/admin/users"]
    # Schemathesis also calls each operation that declares Bearer security without credentials
    # (those cases answer 401); with the user's token, the admin list is always refused.
    if role == "admin":
        assert 200 in admin_list, seen
    else:
        assert 403 in admin_list and admin_list <= {401, 403}, seen


def test_unauthenticated_calls_answer_problems_never_5xx(fuzz_schema: Any) -> None:
    seen = explore(fuzz_schema, lambda case: case.call_and_validate(checks=CHECKS))
    assert seen["GET /api/v1/me"] == {401}, seen


# --- pagination cursors ---------------------------------------------------------------------
# Cursors are opaque to the schema (a string), so generated ones are almost never well-formed
# base64 JSON and never reach the database. These are: any JSON value a client could forge.


def encode_cursor_like(value: Any) -> str:
    """base64url(JSON), the shape of the cursors the API hands out."""
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


JSON_SCALARS = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**66)
    | st.integers(min_value=-(2**66), max_value=-(2**63) + 1)
    | st.text(max_size=40)
    | st.floats()
    | st.booleans()
    | st.none()
)
FORGED_CURSORS = st.one_of(
    JSON_SCALARS.map(encode_cursor_like),
    st.lists(JSON_SCALARS, max_size=3).map(encode_cursor_like),
    st.text(max_size=60),
)


def test_forged_pagination_cursors_answer_problems_never_5xx(
    fuzz_schema: Any, fuzz_app: Any, tokens: dict[str, str]
) -> None:
    token = tokens["admin"]
    paths = [
        op.path
        for op in (result.ok() for result in fuzz_schema.get_all_operations())
        if op.method.upper() == "GET" and any(p.name == "cursor" for p in op.query)
    ]
    assert len(paths) >= 3, paths

    @hypothesis.settings(HYPOTHESIS, max_examples=MAX_EXAMPLES * 5)
    @hypothesis.given(path=st.sampled_from(paths), cursor=FORGED_CURSORS)
    @hypothesis.example(path="/api/v1/admin/audit", cursor=encode_cursor_like(2**63))
    @hypothesis.example(path="/api/v1/me/events", cursor=encode_cursor_like(-(2**63) - 1))
    @hypothesis.example(path="/api/v1/admin/users", cursor=encode_cursor_like("\x00"))
    @hypothesis.example(path="/api/v1/admin/users", cursor=encode_cursor_like("\ud800"))
    def run(path: str, cursor: str) -> None:
        with get_client(fuzz_app) as client:
            r = client.get(path, params={"cursor": cursor}, headers=bearer(token))
        assert r.status_code < 500, f"{path}?cursor={cursor} answered {r.status_code}"
        if r.status_code >= 400:
            assert_problem(r.status_code, r.headers.get("content-type", ""), r.content)

    run()

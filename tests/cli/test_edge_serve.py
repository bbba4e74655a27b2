"""The edge as an operator runs it, against `cloudmfa serve` (PostgreSQL, Redis):

- a browser session through a real cookie jar;
- JSON logs: every line one object, each request's line with its id, route, status, latency
  and user; and after driving every flow, not one password, secret, code or token in them;
- trusted proxies given as CIDRs: X-Forwarded-Proto https from one turns HSTS on, from any
  other address it is ignored;
- SIGTERM: a request in flight is finished, within the grace period and no longer;
- /docs in a real Chromium: Swagger UI renders under its strict CSP, loading nothing from
  elsewhere.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from conftest import REDIS_URL, TEST_SECRET_KEYS, PgDatabase, bearer, drop_redis_prefix
from serving import Serve, clean_env, run_sync
from support import cloudmfa_command

pytestmark = pytest.mark.slow

PASSWORD = "plum-orbit-velvet-canyon-42"
FAST_HASHING = {"CLOUDMFA_ARGON2_MEMORY_KIB": "8192", "CLOUDMFA_ARGON2_TIME_COST": "1"}
REQUEST_FIELDS = {"timestamp", "level", "event", "request_id", "route", "status", "latency_ms"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One service with JSON logs at debug level, on PostgreSQL and Redis, that believes the
    X-Forwarded-* headers of 127.0.0.0/8 (the test plays the proxy)."""
    workdir = Path(tmp_path_factory.mktemp("edge"))
    db = PgDatabase()
    run_sync(db.create())
    prefix = f"cloudmfa-edge-{uuid.uuid4().hex[:8]}:"
    env = clean_env(
        CLOUDMFA_DATABASE_URL=db.url,
        CLOUDMFA_REDIS_URL=REDIS_URL,
        CLOUDMFA_REDIS_KEY_PREFIX=prefix,
        CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
        CLOUDMFA_MFA_POLICY="optional",
        CLOUDMFA_IP_RATE_LIMIT="100000/minute",
        CLOUDMFA_LOG_FORMAT="json",
        CLOUDMFA_LOG_LEVEL="debug",
        CLOUDMFA_TRUSTED_PROXIES="10.9.8.7, 127.0.0.0/8",
        **FAST_HASHING,
    )
    serve = Serve(workdir, env, "--workers", "2")
    try:
        yield serve.start()
    finally:
        serve.kill()
        run_sync(drop_redis_prefix(prefix))
        run_sync(db.drop())


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not one JSON object: {line!r}")
    return parsed


# --- a browser session -------------------------------------------------------------------


def test_a_browser_session_through_a_real_cookie_jar(served: Serve) -> None:
    with served.client() as plain:
        email = f"jar-{uuid.uuid4().hex[:8]}@example.com"
        plain.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
    cookie_mode = {"X-CloudMFA-Session": "cookie"}
    with served.client() as browser:
        r = browser.post(
            "/api/v1/auth/login",
            json={"email": email, "password": PASSWORD},
            headers=cookie_mode,
        )
        assert r.status_code == 200 and "refresh_token" not in r.json(), r.text
        assert {c.name for c in browser.cookies.jar} == {"cloudmfa_refresh", "cloudmfa_csrf"}
        refresh_cookie = next(c for c in browser.cookies.jar if c.name == "cloudmfa_refresh")
        assert refresh_cookie.path == "/api/v1/auth"
        assert refresh_cookie.has_nonstandard_attr("HttpOnly")

        # The page reads the CSRF cookie and echoes it; without it the call is refused.
        assert browser.post("/api/v1/auth/refresh").json()["code"] == "csrf_failed"
        csrf = {"X-CSRF-Token": browser.cookies["cloudmfa_csrf"]}
        r = browser.post("/api/v1/auth/refresh", headers=csrf)
        assert r.status_code == 200, r.text
        access = r.json()["access_token"]
        assert browser.get("/api/v1/me", headers=bearer(access)).status_code == 200

        csrf = {"X-CSRF-Token": browser.cookies["cloudmfa_csrf"]}
        assert browser.post("/api/v1/auth/logout", headers=csrf).status_code == 204
        assert not list(browser.cookies.jar)
        assert browser.get("/api/v1/me", headers=bearer(access)).status_code == 401


# --- logs --------------------------------------------------------------------------------


class Secrets:
    """Everything secret a flow used or was given, to look for in the log afterwards."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, str) and value:
                self.values.add(value)
            elif isinstance(value, list):
                self.add(*value)

    def tokens_of(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("access_token", "refresh_token", "mfa_token", "device_token"):
            self.add(body.get(key))
        return body


def drive_every_flow(served: Serve, secrets: Secrets) -> dict[str, str]:
    """Sign-up, both login steps (TOTP enrolment, a recovery code, a remembered device), refresh,
    the browser's cookie session, step-up changes, sessions, administration, logout. Returns
    ids to look for in the log."""
    email = f"leak-{uuid.uuid4().hex[:8]}@example.com"
    new_password = "saffron-glacier-tundra-echo-88"
    wrong_password = "orchid-meteor-lagoon-wrong-51"
    secrets.add(PASSWORD, new_password, wrong_password)
    with served.client() as c:
        user = c.post("/api/v1/accounts", json={"email": email, "password": PASSWORD}).json()
        assert (
            c.post(
                "/api/v1/auth/login", json={"email": email, "password": wrong_password}
            ).status_code
            == 401
        )
        first = secrets.tokens_of(
            c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        )
        headers = bearer(first["access_token"])
        c.get("/api/v1/me", headers=headers, params={"access_token": first["access_token"]})
        factor = c.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers).json()
        secrets.add(factor["secret"], factor["otpauth_uri"])
        code = pyotp.TOTP(factor["secret"]).now()
        wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
        secrets.add(code)
        activated = c.post(
            f"/api/v1/me/factors/{factor['id']}/activate", json={"code": code}, headers=headers
        ).json()
        recovery = activated["recovery_codes"]
        secrets.add(recovery)

        start = secrets.tokens_of(
            c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        )
        c.post(
            "/api/v1/auth/challenge",
            json={"mfa_token": start["mfa_token"], "factor_id": factor["id"]},
        )
        r = c.post(
            "/api/v1/auth/verify",
            json={"mfa_token": start["mfa_token"], "factor_id": factor["id"], "code": wrong_code},
        )
        assert r.status_code == 401
        verified = secrets.tokens_of(
            c.post(
                "/api/v1/auth/verify",
                json={
                    "mfa_token": start["mfa_token"],
                    "factor_id": "recovery",
                    "code": recovery[0],
                    "remember_device": True,
                },
            ).json()
        )
        strong = bearer(verified["access_token"])
        remembered = secrets.tokens_of(
            c.post(
                "/api/v1/auth/login",
                json={
                    "email": email,
                    "password": PASSWORD,
                    "device_token": verified["device_token"],
                },
            ).json()
        )
        assert remembered["status"] == "authenticated", remembered
        secrets.tokens_of(
            c.post(
                "/api/v1/auth/refresh", json={"refresh_token": remembered["refresh_token"]}
            ).json()
        )
        c.post("/api/v1/auth/refresh", json={"refresh_token": remembered["refresh_token"]})
        new_codes = c.post("/api/v1/me/recovery-codes", headers=strong).json()
        secrets.add(new_codes["recovery_codes"])
        c.get("/api/v1/me/sessions", headers=strong)
        c.get("/api/v1/me/devices", headers=strong)
        c.get("/api/v1/me/events", headers=strong)
        r = c.post(
            "/api/v1/me/password",
            json={"current_password": PASSWORD, "new_password": new_password},
            headers=strong,
        )
        assert r.status_code == 204, r.text

    with served.client() as browser:
        start = secrets.tokens_of(
            browser.post(
                "/api/v1/auth/login",
                json={"email": email, "password": new_password},
                headers={"X-CloudMFA-Session": "cookie"},
            ).json()
        )
        cookie_session = secrets.tokens_of(
            browser.post(
                "/api/v1/auth/verify",
                json={
                    "mfa_token": start["mfa_token"],
                    "factor_id": "recovery",
                    "code": new_codes["recovery_codes"][0],
                },
                headers={"X-CloudMFA-Session": "cookie"},
            ).json()
        )
        for cookie in browser.cookies.jar:
            secrets.add(cookie.value)
        csrf = {"X-CSRF-Token": browser.cookies["cloudmfa_csrf"]}
        secrets.tokens_of(browser.post("/api/v1/auth/refresh", headers=csrf).json())
        for cookie in browser.cookies.jar:
            secrets.add(cookie.value)
        csrf = {"X-CSRF-Token": browser.cookies["cloudmfa_csrf"]}
        assert browser.post("/api/v1/auth/logout", headers=csrf).status_code == 204
        assert cookie_session["status"] == "authenticated"

    admin_email = f"leak-admin-{uuid.uuid4().hex[:8]}@example.com"
    admin_password = "copper-willow-harbor-pixel-73"
    secrets.add(admin_password)
    result = subprocess.run(
        [*cloudmfa_command(), "create-admin", admin_email, "--password-stdin"],
        input=admin_password + "\n",
        env=served.env,
        cwd=served.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert admin_password not in result.stdout + result.stderr
    with served.client() as c:
        login = secrets.tokens_of(
            c.post(
                "/api/v1/auth/login", json={"email": admin_email, "password": admin_password}
            ).json()
        )
        headers = bearer(login["access_token"])
        factor = c.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers).json()
        secrets.add(factor["secret"], factor["otpauth_uri"])
        code = pyotp.TOTP(factor["secret"]).now()
        secrets.add(code)
        codes = c.post(
            f"/api/v1/me/factors/{factor['id']}/activate", json={"code": code}, headers=headers
        ).json()["recovery_codes"]
        secrets.add(codes)
        start = secrets.tokens_of(
            c.post(
                "/api/v1/auth/login", json={"email": admin_email, "password": admin_password}
            ).json()
        )
        admin = secrets.tokens_of(
            c.post(
                "/api/v1/auth/verify",
                json={"mfa_token": start["mfa_token"], "factor_id": "recovery", "code": codes[0]},
            ).json()
        )
        admin_headers = bearer(admin["access_token"])
        assert c.get("/api/v1/admin/users", headers=admin_headers).status_code == 200
        c.get("/api/v1/admin/audit", headers=admin_headers)
        c.post(f"/api/v1/admin/users/{user['id']}/lock", headers=admin_headers)
        c.post(f"/api/v1/admin/users/{user['id']}/unlock", headers=admin_headers)
        c.get("/healthz", headers={"X-Request-ID": "edge-leak-test-1"})
        assert c.post("/api/v1/auth/logout", headers=admin_headers).status_code == 204
    return {"user_id": user["id"]}


def test_json_logs_name_each_request_and_hold_no_secret(served: Serve) -> None:
    secrets = Secrets()
    ids = drive_every_flow(served, secrets)
    time.sleep(0.5)  # the workers' last lines reach the file
    output = served.output()
    records = json_lines(output)

    # Every secret was long enough to be unmistakable, and none is in the output.
    assert len(secrets.values) > 30
    assert all(len(value) >= 6 for value in secrets.values)
    leaked = sorted(value for value in secrets.values if value in output)
    assert not leaked, leaked

    assert all({"timestamp", "level", "event"} <= set(record) for record in records)
    assert any(r.get("logger", "").startswith("uvicorn") for r in records)  # uvicorn's too
    access = [r for r in records if r.get("logger") == "cloudmfa.access"]
    assert len(access) > 40
    assert all(REQUEST_FIELDS <= set(r) for r in access)
    assert len({r["request_id"] for r in access}) == len(access)
    assert any(r["request_id"] == "edge-leak-test-1" and r["route"] == "/healthz" for r in access)
    me = [r for r in access if r["route"] == "/api/v1/me/sessions"]
    assert me and all(r["user_id"] == ids["user_id"] for r in me)
    assert any(r["route"] == "/api/v1/me/factors/{factor_id}/activate" for r in access)


# --- proxies and HSTS --------------------------------------------------------------------


def test_forwarded_proto_from_a_trusted_network_turns_hsts_on(served: Serve) -> None:
    with served.client() as c:
        plain = c.get("/healthz")
        assert "strict-transport-security" not in plain.headers
        proxied = c.get("/healthz", headers={"X-Forwarded-Proto": "https"})
        assert proxied.headers["strict-transport-security"].startswith("max-age=")
        # The address behind the proxy is the one audit events and sessions see.
        email = f"proxied-{uuid.uuid4().hex[:8]}@example.com"
        c.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
        forwarded = {"X-Forwarded-For": "203.0.113.77", "X-Forwarded-Proto": "https"}
        r = c.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, headers=forwarded
        )
        sessions = c.get("/api/v1/me/sessions", headers=bearer(r.json()["access_token"])).json()[
            "sessions"
        ]
        assert [s["ip"] for s in sessions] == ["203.0.113.77"]


def test_forwarded_headers_from_elsewhere_are_ignored(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = Path(tmp_path_factory.mktemp("untrusted"))
    env = clean_env(
        CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
        CLOUDMFA_MFA_POLICY="optional",
        CLOUDMFA_TRUSTED_PROXIES="10.0.0.0/8,192.0.2.1",
        **FAST_HASHING,
    )
    serve = Serve(workdir, env).start()
    try:
        with serve.client() as c:
            forwarded = {"X-Forwarded-For": "203.0.113.77", "X-Forwarded-Proto": "https"}
            assert "strict-transport-security" not in c.get("/healthz", headers=forwarded).headers
            email = f"direct-{uuid.uuid4().hex[:8]}@example.com"
            c.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
            r = c.post(
                "/api/v1/auth/login",
                json={"email": email, "password": PASSWORD},
                headers=forwarded,
            )
            sessions = c.get(
                "/api/v1/me/sessions", headers=bearer(r.json()["access_token"])
            ).json()["sessions"]
            assert [s["ip"] for s in sessions] == ["127.0.0.1"]
    finally:
        serve.kill()


def test_a_trusted_proxy_that_is_not_a_network_stops_serve_with_one_line(
    tmp_path: Path,
) -> None:
    env = clean_env(CLOUDMFA_TRUSTED_PROXIES="10.0.0.1/8")
    result = subprocess.run(
        [*cloudmfa_command(), "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "CLOUDMFA_TRUSTED_PROXIES" in result.stderr.upper() or "trusted_proxies" in (
        result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr


# --- graceful shutdown -------------------------------------------------------------------


def start_request_in_flight(serve: Serve) -> tuple[socket.socket, bytes]:
    """A sign-up whose headers have arrived but whose body is still on its way: a request in
    flight for as long as the test holds the rest back."""
    email = f"late-{uuid.uuid4().hex[:8]}@example.com"
    body = json.dumps({"email": email, "password": PASSWORD}).encode()
    sock = socket.create_connection(("127.0.0.1", serve.port), timeout=30)
    sock.sendall(
        b"POST /api/v1/accounts HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    return sock, body[10:]


def read_response(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def graceful_server(tmp_path: Path, grace_s: int) -> Serve:
    env = clean_env(
        CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
        CLOUDMFA_MFA_POLICY="optional",
        CLOUDMFA_SHUTDOWN_GRACE_S=str(grace_s),
        **FAST_HASHING,
    )
    return Serve(tmp_path, env).start()


def test_sigterm_finishes_a_request_in_flight(tmp_path: Path) -> None:
    serve = graceful_server(tmp_path, grace_s=30)
    try:
        with serve.client() as c:  # the headers' arrival is observable: wait for a request
            c.get("/healthz")
        sock, rest = start_request_in_flight(serve)
        serve.wait_for_output("request")  # the healthz line: the worker is serving
        time.sleep(0.3)  # the in-flight request's headers have been parsed
        serve.terminate()
        serve.wait_for_output("Waiting for connections to close")
        # New connections are refused from now on.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{serve.base_url}/healthz", timeout=2)
        sock.sendall(rest)
        answer = read_response(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
        assert serve.wait() in (0, -15)
        assert "Application shutdown complete" in serve.output()
    finally:
        serve.kill()


def test_sigterm_waits_no_longer_than_the_grace_period(tmp_path: Path) -> None:
    serve = graceful_server(tmp_path, grace_s=2)
    try:
        with serve.client() as c:
            c.get("/healthz")
        sock, _ = start_request_in_flight(serve)  # its body never comes
        time.sleep(0.3)
        serve.terminate()
        stopped_at = time.monotonic()
        serve.wait_for_output("Waiting for connections to close")
        serve.wait(timeout_s=20)
        # Far less than the 30 s default would have taken; the request was cut off.
        assert time.monotonic() - stopped_at < 15
        sock.close()
        assert "Cancel" in serve.output() or "timeout" in serve.output().lower()
    finally:
        serve.kill()


# --- /docs in a real browser -------------------------------------------------------------


def test_docs_render_in_chromium_under_the_csp(served: Serve) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://localhost:{served.port}"
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on(
                "console",
                lambda message: (
                    problems.append(message.text) if message.type in ("error", "warning") else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{base}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            operations = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert operations >= 28
    assert "cloudmfa" in title
    outside = [url for url in requested if not url.startswith(base) and not url.startswith("data:")]
    assert not outside, outside
    csp_violations = [text for text in problems if re.search("Content.Security.Policy", text)]
    assert not csp_violations, csp_violations

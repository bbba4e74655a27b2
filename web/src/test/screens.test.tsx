import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { session } from "../api/client";
import { callsTo, me, mockApi, problem, signedInRoutes, tokens } from "./mockApi";
import { location, renderAt } from "./render";

const webauthn = vi.hoisted(() => ({ startAuthentication: vi.fn(), startRegistration: vi.fn(), browserSupportsWebAuthnAutofill: vi.fn(async () => false) }));
vi.mock("@simplewebauthn/browser", () => ({ ...webauthn, WebAuthnAbortService: { cancelCeremony: vi.fn() } }));

afterEach(() => vi.clearAllMocks());

const CODES = Array.from({ length: 10 }, (_, i) => `AAAA-BBBB-CCCC-${String(i).padStart(4, "0")}`);

describe("sign-up", () => {
  it("shows a policy refusal under the password field, in the service's words", async () => {
    mockApi({ "POST /api/v1/accounts": problem(422, "breached_password", "The password appears on a list of breached passwords.") });
    const user = userEvent.setup();
    renderAt("/sign-up");
    await user.type(screen.getByLabelText("Email"), "ada@example.com");
    await user.type(screen.getByLabelText("Password"), "password1234");
    await user.click(screen.getByRole("button", { name: "Create account" }));
    const field = screen.getByLabelText("Password");
    await waitFor(() => expect(field).toHaveAccessibleDescription(/breached passwords/));
    expect(field).toHaveFocus();
    expect(await screen.findByTestId("strength")).toHaveTextContent(/Password strength: (Very weak|Weak)/);
  });

  it("shows a taken address under the email field", async () => {
    mockApi({ "POST /api/v1/accounts": problem(409, "email_taken", "An account with this email exists.") });
    const user = userEvent.setup();
    renderAt("/sign-up");
    await user.type(screen.getByLabelText("Email"), "ada@example.com");
    await user.type(screen.getByLabelText("Password"), "plum-orbit-velvet-canyon-42");
    await user.click(screen.getByRole("button", { name: "Create account" }));
    await waitFor(() => expect(screen.getByLabelText("Email")).toHaveAccessibleDescription("An account with this email exists."));
  });

  it("signs the new account in and, under a required policy, opens the set-up wizard", async () => {
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/accounts": { status: 201, body: { id: "u1", email: "ada@example.com" } },
      "POST /api/v1/auth/login": { status: 200, body: tokens({ mfa_enrollment_required: true }) },
    });
    const user = userEvent.setup();
    renderAt("/sign-up");
    await user.type(screen.getByLabelText("Email"), "ada@example.com");
    await user.type(screen.getByLabelText(/^Name/), "Ada");
    await user.type(screen.getByLabelText("Password"), "plum-orbit-velvet-canyon-42");
    await user.click(screen.getByRole("button", { name: "Create account" }));
    await waitFor(() => expect(location.current).toBe("/setup"));
    expect(callsTo("POST", "/api/v1/accounts")[0].body).toEqual({ email: "ada@example.com", password: "plum-orbit-velvet-canyon-42", display_name: "Ada" });
    expect(await screen.findByText(/needs a second factor/)).toBeInTheDocument();
  });
});

describe("the set-up wizard", () => {
  const enrolmentOnly = () => session.start(tokens({ mfa_enrollment_required: true }) as never);

  it("sets up an authenticator app: QR code, secret, verify, then the recovery codes once", async () => {
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/me/factors": { status: 201, body: { id: "f1", type: "totp", status: "pending", secret: "JBSWY3DPEHPK3PXP", otpauth_uri: "otpauth://totp/x", qr_svg: "<svg xmlns='http://www.w3.org/2000/svg'/>" } },
      "POST /api/v1/me/factors/f1/activate": { status: 200, body: { id: "f1", type: "totp", status: "active", recovery_codes: CODES } },
    });
    enrolmentOnly();
    const user = userEvent.setup();
    renderAt("/setup");
    await user.click(await screen.findByRole("button", { name: "Authenticator app" }));
    await user.click(screen.getByRole("button", { name: "Continue" }));
    expect(await screen.findByTestId("totp-secret")).toHaveTextContent("JBSWY3DPEHPK3PXP");
    const qr = screen.getByRole("img", { name: "QR code for your authenticator app" });
    expect(qr.getAttribute("src")).toMatch(/^data:image\/svg\+xml/); // an image, never inserted markup
    await user.type(screen.getByLabelText(/^Code/), "123456");
    await user.click(screen.getByRole("button", { name: "Finish set-up" }));
    expect(callsTo("POST", "/api/v1/me/factors/f1/activate")[0].body).toEqual({ code: "123456" });
    const list = await screen.findByRole("list", { name: "Your recovery codes" });
    expect(within(list).getAllByRole("listitem")).toHaveLength(10);
    expect(screen.getByRole("heading", { name: "Your recovery codes" })).toHaveFocus();
    const go = screen.getByRole("button", { name: "Continue" });
    expect(go).toBeDisabled();
    await user.click(screen.getByLabelText("I have saved these codes"));
    await user.click(go);
    // The confined session ends; the user signs in again with the new factor.
    await waitFor(() => expect(location.current).toBe("/sign-in"));
    expect(await screen.findByText(/Sign in again with it/)).toBeInTheDocument();
    await waitFor(() => expect(callsTo("POST", "/api/v1/auth/logout")).toHaveLength(1));
  });

  it("sets up SMS: the number goes to the service, the hint comes back", async () => {
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/me/factors": { status: 201, body: { id: "f2", type: "sms", status: "pending", destination_hint: "+1******0123" } },
      "POST /api/v1/me/factors/f2/activate": { status: 200, body: { id: "f2", type: "sms", status: "active" } },
    });
    session.start(tokens() as never);
    const user = userEvent.setup();
    renderAt("/setup");
    await user.click(await screen.findByRole("button", { name: "Text message (SMS)" }));
    await user.type(screen.getByLabelText(/^Mobile number/), "+14155550123");
    await user.click(screen.getByRole("button", { name: "Send code" }));
    expect(await screen.findByText(/We sent a code to \+1\*\*\*\*\*\*0123/)).toBeInTheDocument();
    expect(callsTo("POST", "/api/v1/me/factors")[0].body).toEqual({ type: "sms", phone: "+14155550123" });
    await user.type(screen.getByLabelText(/^Code/), "654321");
    await user.click(screen.getByRole("button", { name: "Finish set-up" }));
    await waitFor(() => expect(location.current).toBe("/security"));
  });

  it("sets up email codes", async () => {
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/me/factors": { status: 201, body: { id: "f3", type: "email", status: "pending", destination_hint: "a***@example.com" } },
    });
    session.start(tokens() as never);
    const user = userEvent.setup();
    renderAt("/setup");
    await user.click(await screen.findByRole("button", { name: "Email code" }));
    await user.type(screen.getByLabelText(/^Email address for codes/), "ada@example.com");
    await user.click(screen.getByRole("button", { name: "Send code" }));
    expect(await screen.findByText(/a\*\*\*@example\.com/)).toBeInTheDocument();
    expect(callsTo("POST", "/api/v1/me/factors")[0].body).toEqual({ type: "email", email: "ada@example.com" });
  });

  it("sets up a passkey with the browser's ceremony", async () => {
    const credential = { id: "new-cred", type: "public-key", response: { attestationObject: "x" } };
    webauthn.startRegistration.mockResolvedValue(credential);
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/me/factors": { status: 201, body: { id: "f4", type: "webauthn", status: "pending", public_key: { challenge: "c", rp: { id: "localhost" } } } },
      "POST /api/v1/me/factors/f4/activate": { status: 200, body: { id: "f4", type: "webauthn", status: "active", recovery_codes: CODES } },
    });
    session.start(tokens() as never);
    const user = userEvent.setup();
    renderAt("/setup");
    await user.click(await screen.findByRole("button", { name: "Passkey or security key" }));
    await user.click(screen.getByRole("button", { name: "Create passkey" }));
    expect(await screen.findByRole("heading", { name: "Your recovery codes" })).toBeInTheDocument();
    expect(webauthn.startRegistration).toHaveBeenCalledWith({ optionsJSON: { challenge: "c", rp: { id: "localhost" } } });
    expect(callsTo("POST", "/api/v1/me/factors/f4/activate")[0].body).toEqual({ credential });
  });

  it("asks for a fresh sign-in when the service wants step-up, then carries on", async () => {
    let enrols = 0;
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/me/factors": () =>
        ++enrols === 1
          ? problem(403, "reauthentication_required", "Sign in again to change your factors.")
          : { status: 201, body: { id: "f5", type: "totp", status: "pending", secret: "JBSWY3DPEHPK3PXP", qr_svg: "<svg/>" } },
      "POST /api/v1/auth/login": { status: 200, body: { status: "mfa_required", mfa_token: "m", expires_in: 300, factors: [{ id: "t", type: "totp", label: null }] } },
      "POST /api/v1/auth/challenge": { status: 200, body: {} },
      "POST /api/v1/auth/verify": { status: 200, body: tokens({ access_token: "access-stepped-up" }) },
    });
    session.start(tokens() as never);
    const user = userEvent.setup();
    renderAt("/setup");
    await user.click(await screen.findByRole("button", { name: "Authenticator app" }));
    await user.click(screen.getByRole("button", { name: "Continue" }));
    const dialog = await screen.findByRole("dialog", { name: "Confirm it's you" });
    expect(within(dialog).getByLabelText("Email")).toHaveValue(me.email);
    await user.type(within(dialog).getByLabelText("Password"), "plum-orbit-velvet-canyon-42");
    await user.click(within(dialog).getByRole("button", { name: "Sign in" }));
    await user.type(await within(dialog).findByLabelText(/^Code/), "123456");
    expect(within(dialog).queryByLabelText(/Remember this device/)).not.toBeInTheDocument();
    await user.click(within(dialog).getByRole("button", { name: "Verify" }));
    expect(await screen.findByTestId("totp-secret")).toBeInTheDocument();
    expect(callsTo("POST", "/api/v1/me/factors")[1].headers.get("Authorization")).toBe("Bearer access-stepped-up");
    expect(callsTo("POST", "/api/v1/auth/login")[0].body).not.toHaveProperty("device_token");
  });
});

describe("forgotten password", () => {
  it("asks for a link and says the same whether or not the account exists", async () => {
    mockApi({ "POST /api/v1/auth/password-reset": { status: 202, body: {} } });
    const user = userEvent.setup();
    renderAt("/forgot-password");
    await user.type(screen.getByLabelText("Email"), "ada@example.com");
    await user.click(screen.getByRole("button", { name: "Send link" }));
    expect(await screen.findByText(/If an account uses that address/)).toBeInTheDocument();
    expect(callsTo("POST", "/api/v1/auth/password-reset")[0].body).toEqual({ email: "ada@example.com" });
  });

  it("sets the new password with the link's token", async () => {
    mockApi({ "POST /api/v1/auth/password-reset/confirm": { status: 204 } });
    const user = userEvent.setup();
    renderAt("/reset-password?token=tok-123");
    await user.type(screen.getByLabelText("New password"), "plum-orbit-velvet-canyon-42");
    await user.type(screen.getByLabelText("Repeat the new password"), "plum-orbit-velvet-canyon-4");
    await user.click(screen.getByRole("button", { name: "Set new password" }));
    expect(await screen.findByText("The passwords do not match.")).toBeInTheDocument();
    await user.type(screen.getByLabelText("Repeat the new password"), "2");
    await user.click(screen.getByRole("button", { name: "Set new password" }));
    await waitFor(() => expect(location.current).toBe("/sign-in"));
    expect(callsTo("POST", "/api/v1/auth/password-reset/confirm")[0].body).toEqual({ token: "tok-123", new_password: "plum-orbit-velvet-canyon-42" });
    expect(await screen.findByText(/Sign in with the new one/)).toBeInTheDocument();
  });

  it("shows an expired link's problem", async () => {
    mockApi({ "POST /api/v1/auth/password-reset/confirm": problem(401, "invalid_token", "This link has expired.") });
    const user = userEvent.setup();
    renderAt("/reset-password?token=old");
    await user.type(screen.getByLabelText("New password"), "plum-orbit-velvet-canyon-42");
    await user.type(screen.getByLabelText("Repeat the new password"), "plum-orbit-velvet-canyon-42");
    await user.click(screen.getByRole("button", { name: "Set new password" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("This link has expired.");
  });
});

describe("the admin console", () => {
  const admin = { ...me, roles: ["admin"] };
  const user = (i: number) => ({ id: `u${i}`, email: `user${i}@example.com`, display_name: null, created_at: "2026-12-01T10:00:00Z", roles: [], locked: false, locked_at: null });

  it("pages through users with the cursor and searches", async () => {
    mockApi({
      ...signedInRoutes,
      "GET /api/v1/me": { status: 200, body: admin },
      "GET /api/v1/admin/users": (call) =>
        call.query.get("cursor") === "c2"
          ? { status: 200, body: { users: [user(3)], next_cursor: null } }
          : { status: 200, body: { users: [user(1), user(2)], next_cursor: "c2" } },
    });
    session.start(tokens() as never);
    const u = userEvent.setup();
    renderAt("/admin");
    expect(await screen.findByRole("link", { name: "user1@example.com" })).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Previous page" })).toBeDisabled();
    await u.click(screen.getByRole("button", { name: "Next page" }));
    expect(await screen.findByRole("link", { name: "user3@example.com" })).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Next page" })).toBeDisabled();
    await u.click(screen.getByRole("button", { name: "Previous page" }));
    expect(await screen.findByRole("link", { name: "user1@example.com" })).toBeInTheDocument();
    await u.type(screen.getByLabelText("Search by email or name"), "user2");
    await u.click(screen.getByRole("button", { name: "Search" }));
    await waitFor(() => expect(callsTo("GET", "/api/v1/admin/users").some((c) => c.query.get("query") === "user2" && !c.query.has("cursor"))).toBe(true));
  });

  it("locks a user and resets their MFA after a confirmation", async () => {
    let locked = false;
    const detail = () => ({ ...user(7), locked, mfa_enabled: true, factors: [{ id: "f", type: "totp", label: "Phone", status: "active", created_at: "2026-12-01T10:00:00Z", last_used_at: null }] });
    mockApi({
      ...signedInRoutes,
      "GET /api/v1/me": { status: 200, body: admin },
      "GET /api/v1/admin/users/u7": () => ({ status: 200, body: detail() }),
      "POST /api/v1/admin/users/u7/lock": () => ((locked = true), { status: 204 }),
      "DELETE /api/v1/admin/users/u7/factors": { status: 204 },
    });
    session.start(tokens() as never);
    const u = userEvent.setup();
    renderAt("/admin/users/u7");
    expect(await screen.findByRole("heading", { name: "user7@example.com" })).toBeInTheDocument();
    await u.click(screen.getByRole("button", { name: "Lock account" }));
    expect(await screen.findByText(/This account is locked/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Unlock account" })).toBeInTheDocument();
    await u.click(screen.getByRole("button", { name: "Reset MFA" }));
    const dialog = await screen.findByRole("dialog", { name: "Reset MFA" });
    await u.click(within(dialog).getByRole("button", { name: "Reset MFA" }));
    await waitFor(() => expect(callsTo("DELETE", "/api/v1/admin/users/u7/factors")).toHaveLength(1));
  });

  it("filters the audit log by user and type", async () => {
    mockApi({
      ...signedInRoutes,
      "GET /api/v1/me": { status: 200, body: admin },
      "GET /api/v1/admin/audit": { status: 200, body: { events: [], next_cursor: null } },
    });
    session.start(tokens() as never);
    const u = userEvent.setup();
    renderAt("/admin?tab=audit&user_id=u9");
    await waitFor(() => expect(callsTo("GET", "/api/v1/admin/audit")[0]?.query.get("user_id")).toBe("u9"));
    await u.selectOptions(screen.getByRole("combobox", { name: "Event type" }), screen.getByRole("option", { name: "Account locked" }));
    await u.click(screen.getByRole("button", { name: "Apply filters" }));
    await waitFor(() => expect(callsTo("GET", "/api/v1/admin/audit").some((c) => c.query.get("type") === "account.locked" && c.query.get("user_id") === "u9")).toBe(true));
  });

  it("sends someone without the admin role to their own page", async () => {
    mockApi({ ...signedInRoutes });
    session.start(tokens() as never);
    renderAt("/admin");
    await waitFor(() => expect(location.current).toBe("/security"));
  });
});

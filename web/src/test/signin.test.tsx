import { act, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { callsTo, mockApi, problem, signedInRoutes, tokens } from "./mockApi";
import { location, renderAt } from "./render";

const webauthn = vi.hoisted(() => ({
  startAuthentication: vi.fn(),
  startRegistration: vi.fn(),
  browserSupportsWebAuthnAutofill: vi.fn(async () => false),
}));
vi.mock("@simplewebauthn/browser", () => ({
  ...webauthn,
  WebAuthnAbortService: { cancelCeremony: vi.fn() },
}));

const factors = [
  { id: "f-totp", type: "totp", label: "Phone" },
  { id: "f-sms", type: "sms", label: null },
  { id: "f-email", type: "email", label: null },
  { id: "f-key", type: "webauthn", label: "YubiKey" },
  { id: "recovery", type: "recovery", label: null },
];
const mfaRequired = { status: "mfa_required", mfa_token: "mfa-1", expires_in: 300, factors };

async function passwordStep(user: ReturnType<typeof userEvent.setup>) {
  renderAt("/sign-in");
  await user.type(screen.getByLabelText("Email"), "ada@example.com");
  await user.type(screen.getByLabelText("Password"), "plum-orbit-velvet-canyon-42");
  await user.click(screen.getByRole("button", { name: "Sign in" }));
}

beforeEach(() => {
  webauthn.browserSupportsWebAuthnAutofill.mockResolvedValue(false);
});
afterEach(() => {
  vi.useRealTimers();
  vi.clearAllMocks();
});

describe("sign-in", () => {
  it("offers every factor type of the API, then takes a TOTP code and remembers the device", async () => {
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/auth/login": { status: 200, body: mfaRequired },
      "POST /api/v1/auth/challenge": { status: 200, body: {} },
      "POST /api/v1/auth/verify": { status: 200, body: tokens({ device_token: "device-1" }) },
    });
    const user = userEvent.setup();
    await passwordStep(user);
    expect(callsTo("POST", "/api/v1/auth/login")[0].body).toEqual({ email: "ada@example.com", password: "plum-orbit-velvet-canyon-42" });
    const heading = await screen.findByRole("heading", { name: "Choose how to confirm it's you" });
    expect(heading).toHaveFocus();
    for (const name of ["Authenticator app (Phone)", "Text message (SMS)", "Email code", "Passkey or security key (YubiKey)", "Recovery code"]) {
      expect(screen.getByRole("button", { name })).toBeInTheDocument();
    }
    await user.click(screen.getByRole("button", { name: "Authenticator app (Phone)" }));
    await user.type(await screen.findByLabelText(/^Code/), "123456");
    await user.click(screen.getByLabelText(/Remember this device/));
    await user.click(screen.getByRole("button", { name: "Verify" }));
    await waitFor(() => expect(location.current).toBe("/security"));
    expect(callsTo("POST", "/api/v1/auth/verify")[0].body).toEqual({ mfa_token: "mfa-1", factor_id: "f-totp", code: "123456", remember_device: true });
    // Signed calls carry the access token; nothing is kept in the browser's storage.
    await waitFor(() => expect(callsTo("GET", "/api/v1/me").length).toBeGreaterThan(0));
    expect(callsTo("GET", "/api/v1/me")[0].headers.get("Authorization")).toBe("Bearer access-1");
    expect(localStorage.length + sessionStorage.length).toBe(0);
    // The sign-in requests ask for cookie sessions (used once the service offers them).
    expect(callsTo("POST", "/api/v1/auth/verify")[0].headers.get("X-CloudMFA-Session")).toBe("cookie");
  });

  it("shows the problem's detail for a wrong code, focused, and clears the field", async () => {
    mockApi({
      "POST /api/v1/auth/login": { status: 200, body: { ...mfaRequired, factors: [factors[0]] } },
      "POST /api/v1/auth/challenge": { status: 200, body: {} },
      "POST /api/v1/auth/verify": problem(401, "invalid_code", "That code is not valid."),
    });
    const user = userEvent.setup();
    await passwordStep(user);
    await user.type(await screen.findByLabelText(/^Code/), "000000");
    await user.click(screen.getByRole("button", { name: "Verify" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("That code is not valid.");
    expect(alert).toHaveFocus();
    expect(screen.getByLabelText(/^Code/)).toHaveValue("");
  });

  it("returns to the password step when the mfa_token has expired", async () => {
    mockApi({
      "POST /api/v1/auth/login": { status: 200, body: { ...mfaRequired, factors: [factors[0]] } },
      "POST /api/v1/auth/challenge": { status: 200, body: {} },
      "POST /api/v1/auth/verify": problem(401, "mfa_token_expired", "Too many tries; sign in again."),
    });
    const user = userEvent.setup();
    await passwordStep(user);
    await user.type(await screen.findByLabelText(/^Code/), "000000");
    await user.click(screen.getByRole("button", { name: "Verify" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Too many tries; sign in again.");
    expect(screen.getByLabelText("Password")).toBeInTheDocument();
  });

  it("shows a locked account's detail at the password step", async () => {
    mockApi({ "POST /api/v1/auth/login": problem(403, "account_locked", "This account is locked.") });
    const user = userEvent.setup();
    await passwordStep(user);
    expect(await screen.findByRole("alert")).toHaveTextContent("This account is locked.");
  });

  it("tells where an SMS code went and counts down before a resend", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    mockApi({
      "POST /api/v1/auth/login": { status: 200, body: mfaRequired },
      "POST /api/v1/auth/challenge": { status: 202, body: { delivery: "sms", destination_hint: "+1******4567", expires_in: 300 } },
    });
    const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
    await passwordStep(user);
    await user.click(await screen.findByRole("button", { name: "Text message (SMS)" }));
    expect(await screen.findByText("We sent a code to +1******4567.")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: /Send a new code in 30 s/ })).toBeDisabled();
    await act(async () => {
      vi.advanceTimersByTime(31_000);
    });
    const resend = screen.getByRole("button", { name: "Send a new code" });
    expect(resend).toBeEnabled();
    await user.click(resend);
    await waitFor(() => expect(callsTo("POST", "/api/v1/auth/challenge")).toHaveLength(2));
    expect(await screen.findByRole("button", { name: /Send a new code in/ })).toBeDisabled();
  });

  it("waits as long as a 429's Retry-After says before the next resend", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let sends = 0;
    mockApi({
      "POST /api/v1/auth/login": { status: 200, body: mfaRequired },
      "POST /api/v1/auth/challenge": () =>
        ++sends === 1
          ? { status: 202, body: { delivery: "email", destination_hint: "a***@example.com", expires_in: 300 } }
          : problem(429, "rate_limited", "Wait before asking for another code.", { "Retry-After": "90" }),
    });
    const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
    await passwordStep(user);
    await user.click(await screen.findByRole("button", { name: "Email code" }));
    expect(await screen.findByText("We sent a code to a***@example.com.")).toBeInTheDocument();
    await act(async () => {
      vi.advanceTimersByTime(31_000);
    });
    await user.click(screen.getByRole("button", { name: "Send a new code" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Wait before asking for another code.");
    expect(await screen.findByRole("button", { name: /Send a new code in (90|89) s/ })).toBeDisabled();
  });

  it("uses a security key as the second factor", async () => {
    const credential = { id: "cred-1", rawId: "cred-1", type: "public-key", response: {} };
    webauthn.startAuthentication.mockResolvedValue(credential);
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/auth/login": { status: 200, body: mfaRequired },
      "POST /api/v1/auth/challenge": { status: 200, body: { public_key: { challenge: "abc", allowCredentials: [{ id: "cred-1", type: "public-key" }] } } },
      "POST /api/v1/auth/verify": { status: 200, body: tokens() },
    });
    const user = userEvent.setup();
    await passwordStep(user);
    await user.click(await screen.findByRole("button", { name: "Passkey or security key (YubiKey)" }));
    await waitFor(() => expect(location.current).toBe("/security"));
    expect(webauthn.startAuthentication).toHaveBeenCalledWith({ optionsJSON: { challenge: "abc", allowCredentials: [{ id: "cred-1", type: "public-key" }] } });
    expect(callsTo("POST", "/api/v1/auth/verify")[0].body).toEqual({ mfa_token: "mfa-1", factor_id: "f-key", credential });
  });

  it("signs in with a passkey alone, from the button", async () => {
    const credential = { id: "cred-2", type: "public-key", response: {} };
    webauthn.startAuthentication.mockResolvedValue(credential);
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/auth/passkey/options": { status: 200, body: { challenge_id: "ch-1", public_key: { challenge: "xyz" } } },
      "POST /api/v1/auth/passkey/verify": { status: 200, body: tokens() },
    });
    const user = userEvent.setup();
    renderAt("/sign-in");
    await user.click(screen.getByRole("button", { name: "Sign in with a passkey" }));
    await waitFor(() => expect(location.current).toBe("/security"));
    expect(webauthn.startAuthentication).toHaveBeenCalledWith({ optionsJSON: { challenge: "xyz" }, useBrowserAutofill: false });
    expect(callsTo("POST", "/api/v1/auth/passkey/verify")[0].body).toEqual({ challenge_id: "ch-1", credential });
  });

  it("offers passkeys in the email field's autofill where the browser can (conditional UI)", async () => {
    webauthn.browserSupportsWebAuthnAutofill.mockResolvedValue(true);
    webauthn.startAuthentication.mockReturnValue(new Promise(() => {}));
    mockApi({ "POST /api/v1/auth/passkey/options": { status: 200, body: { challenge_id: "ch-2", public_key: { challenge: "auto" } } } });
    renderAt("/sign-in");
    await waitFor(() => expect(webauthn.startAuthentication).toHaveBeenCalledWith({ optionsJSON: { challenge: "auto" }, useBrowserAutofill: true }));
    expect(screen.getByLabelText("Email")).toHaveAttribute("autocomplete", "username webauthn");
  });

  it("says nothing when the service has no passkey sign-in yet", async () => {
    webauthn.browserSupportsWebAuthnAutofill.mockResolvedValue(true);
    mockApi({});
    renderAt("/sign-in");
    await waitFor(() => expect(callsTo("POST", "/api/v1/auth/passkey/options")).toHaveLength(1));
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
  });

  it("sends a remembered device's token at the next password step", async () => {
    mockApi({
      ...signedInRoutes,
      "POST /api/v1/auth/login": { status: 200, body: { ...mfaRequired, factors: [factors[4]] } },
      "POST /api/v1/auth/challenge": { status: 200, body: {} },
      "POST /api/v1/auth/verify": { status: 200, body: tokens({ device_token: "device-9" }) },
    });
    const user = userEvent.setup();
    await passwordStep(user);
    expect(await screen.findByText(/recovery codes \(with or without the dashes\)/)).toBeInTheDocument();
    await user.type(screen.getByLabelText(/^Code/), "abcd-efgh-ijkl-mnop");
    await user.click(screen.getByLabelText(/Remember this device/));
    await user.click(screen.getByRole("button", { name: "Verify" }));
    await waitFor(() => expect(location.current).toBe("/security"));
    await user.click(screen.getAllByRole("button", { name: "Sign out" })[0]);
    await waitFor(() => expect(location.current).toBe("/sign-in"));
    expect(await screen.findByText("You have signed out.")).toBeInTheDocument();
    await user.type(screen.getByLabelText("Email"), "ada@example.com");
    await user.type(screen.getByLabelText("Password"), "plum-orbit-velvet-canyon-42");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(callsTo("POST", "/api/v1/auth/login")).toHaveLength(2));
    expect(callsTo("POST", "/api/v1/auth/login")[1].body).toMatchObject({ device_token: "device-9" });
  });
});

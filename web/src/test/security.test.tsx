import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { session } from "../api/client";
import { callsTo, mockApi, problem, signedInRoutes, tokens } from "./mockApi";
import { location, renderAt } from "./render";

const at = "2026-12-01T10:00:00Z";

describe("the security page", () => {
  it("lists factors, devices, sessions and events, and removes a factor after step-up", async () => {
    let removals = 0;
    mockApi({
      ...signedInRoutes,
      "GET /api/v1/me/factors": { status: 200, body: { factors: [{ id: "f1", type: "totp", label: "Phone", status: "active", created_at: at, last_used_at: at }] } },
      "GET /api/v1/me/devices": { status: 200, body: { devices: [{ id: "d1", created_at: at, last_used_at: null, user_agent: "Firefox", ip: "10.0.0.1" }] } },
      "GET /api/v1/me/sessions": { status: 200, body: { sessions: [{ id: "s1", created_at: at, last_seen_at: at, ip: "10.0.0.1", user_agent: "Firefox", current: true }, { id: "s2", created_at: at, last_seen_at: at, ip: "10.0.0.2", user_agent: "Safari", current: false }] } },
      "GET /api/v1/me/events": { status: 200, body: { events: [{ id: "e1", at, type: "mfa.reset", actor_id: null, subject_id: "u1", ip: null, user_agent: null, outcome: "success", details: {}, actor: { role: "admin" } }], next_cursor: null } },
      "DELETE /api/v1/me/factors/f1": () => (++removals === 1 ? problem(403, "reauthentication_required", "Sign in again first.") : { status: 204 }),
      "DELETE /api/v1/me/sessions/s2": { status: 204 },
      "DELETE /api/v1/me/devices/d1": { status: 204 },
      "POST /api/v1/auth/login": { status: 200, body: tokens({ access_token: "fresh" }) },
    });
    session.start(tokens() as never);
    const user = userEvent.setup();
    renderAt("/security");
    expect(await screen.findByText("Signed in as ada@example.com")).toBeInTheDocument();
    expect(await screen.findByText("All second factors removed (MFA reset) (an administrator)")).toBeInTheDocument();
    expect(screen.getByText("This session")).toBeInTheDocument();

    await user.click(screen.getByRole("button", { name: "Revoke session Safari" }));
    await waitFor(() => expect(callsTo("DELETE", "/api/v1/me/sessions/s2")).toHaveLength(1));
    await user.click(screen.getByRole("button", { name: "Forget device Firefox" }));
    await waitFor(() => expect(callsTo("DELETE", "/api/v1/me/devices/d1")).toHaveLength(1));

    await user.click(screen.getByRole("button", { name: "Remove Authenticator app (Phone)" }));
    const dialog = await screen.findByRole("dialog", { name: "Confirm it's you" });
    await user.type(within(dialog).getByLabelText("Password"), "plum-orbit-velvet-canyon-42");
    await user.click(within(dialog).getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(callsTo("DELETE", "/api/v1/me/factors/f1")).toHaveLength(2));
    expect(callsTo("DELETE", "/api/v1/me/factors/f1")[1].headers.get("Authorization")).toBe("Bearer fresh");
  });

  it("shows new recovery codes once", async () => {
    mockApi({ ...signedInRoutes, "POST /api/v1/me/recovery-codes": { status: 200, body: { recovery_codes: ["AAAA-BBBB-CCCC-DDDD"] } } });
    session.start(tokens() as never);
    const user = userEvent.setup();
    renderAt("/security");
    await user.click(await screen.findByRole("button", { name: "Generate new recovery codes" }));
    expect(await screen.findByText("AAAA-BBBB-CCCC-DDDD")).toBeInTheDocument();
    await user.click(screen.getByLabelText("I have saved these codes"));
    await user.click(screen.getByRole("button", { name: "Continue" }));
    expect(screen.queryByText("AAAA-BBBB-CCCC-DDDD")).not.toBeInTheDocument();
  });

  it("returns to sign-in with a message when the session was revoked", async () => {
    mockApi({ ...signedInRoutes, "GET /api/v1/me/factors": problem(401, "invalid_token", "The session has ended.") });
    session.start(tokens() as never);
    renderAt("/security");
    await waitFor(() => expect(location.current).toBe("/sign-in"));
    expect(await screen.findByText(/Your session has ended/)).toBeInTheDocument();
  });
});

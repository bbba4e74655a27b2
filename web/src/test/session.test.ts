import { afterEach, describe, expect, it, vi } from "vitest";
import { api, REFRESH_MARGIN_S, refresh, resume, session, unwrap } from "../api/client";
import { callsTo, mockApi, problem, tokens } from "./mockApi";

afterEach(() => vi.useRealTimers());

describe("the session", () => {
  it("refreshes the access token a minute before it expires, with the refresh token held in memory", async () => {
    vi.useFakeTimers();
    mockApi({ "POST /api/v1/auth/refresh": { status: 200, body: tokens({ access_token: "access-2", refresh_token: "refresh-2" }) } });
    session.start(tokens({ expires_in: 600 }) as never);
    await vi.advanceTimersByTimeAsync((600 - REFRESH_MARGIN_S - 1) * 1000);
    expect(callsTo("POST", "/api/v1/auth/refresh")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2000);
    expect(callsTo("POST", "/api/v1/auth/refresh")[0].body).toEqual({ refresh_token: "refresh-1" });
    expect(session.get()?.accessToken).toBe("access-2");
    // And again before the new token expires, with the new refresh token.
    await vi.advanceTimersByTimeAsync((600 - REFRESH_MARGIN_S + 1) * 1000);
    expect(callsTo("POST", "/api/v1/auth/refresh")[1].body).toEqual({ refresh_token: "refresh-2" });
    expect(localStorage.length + sessionStorage.length).toBe(0);
  });

  it("in cookie mode refreshes with no body and the CSRF header, and resumes after a reload", async () => {
    document.cookie = "cloudmfa_csrf=csrf-value; path=/";
    mockApi({ "POST /api/v1/auth/refresh": { status: 200, body: { ...tokens(), refresh_token: undefined } } });
    expect(await resume()).toBe(true);
    const [call] = callsTo("POST", "/api/v1/auth/refresh");
    expect(call.headers.get("X-CSRF-Token")).toBe("csrf-value");
    expect(call.headers.get("X-CloudMFA-Session")).toBe("cookie");
    expect(call.body).toBeUndefined();
    expect(session.get()?.refreshToken).toBeNull();
  });

  it("does not try to resume without the CSRF cookie", async () => {
    mockApi({});
    expect(await resume()).toBe(false);
    expect(callsTo("POST", "/api/v1/auth/refresh")).toHaveLength(0);
  });

  it("ends when a signed call answers invalid_token (revoked), and says why once", async () => {
    mockApi({ "GET /api/v1/me": problem(401, "invalid_token", "The session has ended.") });
    session.start(tokens() as never);
    await expect(unwrap(api.GET("/api/v1/me"))).rejects.toMatchObject({ code: "invalid_token" });
    expect(session.get()).toBeNull();
    expect(session.takeEndReason()).toBe("revoked");
    expect(session.takeEndReason()).toBeNull();
  });

  it("stays when a signed call answers another 401 (a wrong current password)", async () => {
    mockApi({ "POST /api/v1/me/password": problem(401, "invalid_credentials", "Wrong password.") });
    session.start(tokens() as never);
    await expect(
      unwrap(api.POST("/api/v1/me/password", { body: { current_password: "x", new_password: "y" } })),
    ).rejects.toMatchObject({ code: "invalid_credentials", detail: "Wrong password." });
    expect(session.get()).not.toBeNull();
  });

  it("ends as expired when the refresh token is refused", async () => {
    mockApi({ "POST /api/v1/auth/refresh": problem(401, "invalid_token", "Expired.") });
    session.start(tokens() as never);
    expect(await refresh()).toBe(false);
    expect(session.get()).toBeNull();
    expect(session.takeEndReason()).toBe("expired");
  });
});

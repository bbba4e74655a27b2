import { screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { session } from "../api/client";
import { t } from "../strings";
import { eventName, eventTypeChoices, factorStatusName, outcomeName } from "../wording";
import { me, mockApi, signedInRoutes, tokens } from "./mockApi";
import { renderAt } from "./render";

const at = "2026-12-01T10:00:00Z";
const event = (id: string, type: string, outcome = "success") => ({ id, at, type, actor_id: "u1", subject_id: "u1", ip: "10.0.0.1", user_agent: null, outcome, details: {} });

describe("the wordings of the service's codes", () => {
  it("words the event types, factor statuses and outcomes the service writes", () => {
    expect(eventName("login.succeeded")).toBe("Signed in");
    expect(eventName("mfa.challenge_sent")).toBe("Sign-in code sent");
    expect(eventName("delivery.failed")).toBe("A code or link could not be delivered");
    expect(factorStatusName("active")).toBe("Active");
    expect(factorStatusName("pending")).toBe("Set-up not finished");
    expect(outcomeName("failure")).toBe("Failed");
  });

  it("falls back to the code for one it has no words for (a newer service)", () => {
    expect(eventName("passkey.upgraded")).toBe("passkey.upgraded");
    expect(factorStatusName("suspended")).toBe("suspended");
    expect(outcomeName("partial")).toBe("partial");
  });

  it("never takes a name the object inherits for a wording", () => {
    for (const code of ["toString", "constructor", "__proto__", "hasOwnProperty"]) {
      expect(eventName(code)).toBe(code);
      expect(factorStatusName(code)).toBe(code);
    }
  });

  it("offers every worded type as a filter choice, by its words", () => {
    const choices = eventTypeChoices();
    expect(choices.map((c) => c.value).sort()).toEqual(Object.keys(t.eventTypes).sort());
    expect(choices).toContainEqual({ value: "account.locked", label: "Account locked" });
    const labels = choices.map((c) => c.label);
    expect(labels).toEqual([...labels].sort((a, b) => a.localeCompare(b)));
  });
});

describe("the screens show the wordings", () => {
  it("security page: events and outcomes in words (the code as the cell's title), factor status in words", async () => {
    mockApi({
      ...signedInRoutes,
      "GET /api/v1/me/factors": { status: 200, body: { factors: [
        { id: "f1", type: "totp", label: "Phone", status: "active", created_at: at, last_used_at: at },
        { id: "f2", type: "sms", label: null, status: "pending", created_at: at, last_used_at: null },
      ] } },
      "GET /api/v1/me/events": { status: 200, body: { events: [event("e1", "login.failed", "failure"), event("e2", "passkey.upgraded")], next_cursor: null } },
    });
    session.start(tokens() as never);
    renderAt("/security");
    const failed = await screen.findByRole("cell", { name: "Sign-in failed" });
    expect(failed).toHaveAttribute("title", "login.failed");
    expect(within(failed.closest("tr") as HTMLElement).getByRole("cell", { name: "Failed" })).toBeInTheDocument();
    expect(screen.getByRole("cell", { name: "passkey.upgraded" })).toBeInTheDocument();
    expect(screen.getByText("Active")).toBeInTheDocument();
    expect(screen.getByText("Set-up not finished")).toBeInTheDocument();
    expect(screen.queryByText("login.failed")).not.toBeInTheDocument();
  });

  it("admin audit log: the words and, for administrators, the code beside them", async () => {
    mockApi({
      ...signedInRoutes,
      "GET /api/v1/me": { status: 200, body: { ...me, roles: ["admin"] } },
      "GET /api/v1/admin/audit": { status: 200, body: { events: [event("e1", "mfa.reset"), event("e2", "passkey.upgraded")], next_cursor: null } },
    });
    session.start(tokens() as never);
    renderAt("/admin?tab=audit");
    const reset = await screen.findByRole("cell", { name: /All second factors removed/ });
    expect(within(reset).getByText("mfa.reset")).toBeInTheDocument();
    // Unknown to this UI: the code stands in for the words, and is still shown as the code.
    expect(screen.getAllByText("passkey.upgraded")).toHaveLength(2);
    expect(screen.getAllByRole("cell", { name: "Succeeded" })).toHaveLength(2);
  });
});

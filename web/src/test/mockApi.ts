/**
 * A stand-in for the service in component tests: `fetch` answers from a table of routes
 * ("POST /api/v1/auth/login" → reply), problems as application/problem+json like the
 * service's, and every call is recorded for assertions.
 */
export type Call = { method: string; path: string; query: URLSearchParams; body: unknown; headers: Headers };
export type Reply = { status: number; body?: unknown; headers?: Record<string, string> };
type Route = Reply | ((call: Call) => Reply);

export const calls: Call[] = [];
let routes: Record<string, Route> = {};

export function mockApi(table: Record<string, Route>): void {
  routes = table;
  calls.length = 0;
}

export function problem(status: number, code: string, detail: string, headers?: Record<string, string>): Reply {
  return { status, headers, body: { type: `urn:cloudmfa:problem:${code}`, title: code, status, detail, code } };
}

export function callsTo(method: string, path: string): Call[] {
  return calls.filter((c) => c.method === method && c.path === path);
}

export async function fakeFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const request = input instanceof Request ? input : new Request(new URL(String(input), "http://localhost"), init);
  const url = new URL(request.url, "http://localhost");
  const text = await request.clone().text();
  const call: Call = {
    method: request.method,
    path: url.pathname,
    query: url.searchParams,
    body: text ? JSON.parse(text) : undefined,
    headers: request.headers,
  };
  calls.push(call);
  const route = routes[`${call.method} ${call.path}`];
  const reply: Reply = route === undefined ? problem(404, "not_found", "No such route in the test") : typeof route === "function" ? route(call) : route;
  const type = reply.status >= 400 ? "application/problem+json" : "application/json";
  const body = reply.status === 204 || reply.body === undefined ? null : JSON.stringify(reply.body);
  return new Response(body, { status: reply.status, headers: { "content-type": type, ...reply.headers } });
}

export const tokens = (overrides: Record<string, unknown> = {}) => ({
  status: "authenticated",
  access_token: "access-1",
  token_type: "Bearer",
  expires_in: 600,
  refresh_token: "refresh-1",
  session_id: "s1",
  ...overrides,
});

export const me = { id: "u1", email: "ada@example.com", display_name: null, created_at: "2026-12-01T10:00:00Z", mfa_enabled: true, roles: [] as string[] };

/** What the security page loads, for tests that land there. */
export const signedInRoutes: Record<string, Reply> = {
  "GET /api/v1/me": { status: 200, body: me },
  "GET /api/v1/me/factors": { status: 200, body: { factors: [] } },
  "GET /api/v1/me/devices": { status: 200, body: { devices: [] } },
  "GET /api/v1/me/sessions": { status: 200, body: { sessions: [] } },
  "GET /api/v1/me/events": { status: 200, body: { events: [], next_cursor: null } },
  "POST /api/v1/auth/logout": { status: 204 },
};

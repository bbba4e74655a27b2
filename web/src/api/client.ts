/**
 * The API client (generated types, see schema.d.ts) and the session it signs calls with.
 *
 * Tokens live in this module's memory only: never in localStorage, sessionStorage or a cookie
 * that script writes. Every sign-in request asks for the cookie mode of the API
 * (`X-CloudMFA-Session: cookie`); a service that offers it keeps the refresh token in an
 * HttpOnly cookie (so a reload keeps the user signed in), one that does not answers with the
 * refresh token in the body, which is then held here in memory. The access token is refreshed
 * a minute before it expires; a 401 `invalid_token` on a signed call (the session was revoked)
 * ends the session here too, with a message for the sign-in page.
 */
import createClient, { type Middleware } from "openapi-fetch";
import { type ApiError, toApiError } from "./problem";
import type { components, paths } from "./schema";

export type Paths = paths;
export type Schemas = components["schemas"];
export type TokenResponse = Schemas["TokenResponse"];

const SESSION_MODE_HEADER = "X-CloudMFA-Session";
const CSRF_COOKIE = "cloudmfa_csrf";
/** Refresh this long before the access token expires. */
export const REFRESH_MARGIN_S = 60;

type Session = {
  accessToken: string;
  sessionId: string;
  /** Absent in cookie mode: the refresh token is then an HttpOnly cookie. */
  refreshToken: string | null;
  /** The login answered `mfa_enrollment_required`: this session may only set up a factor. */
  enrolmentOnly: boolean;
};

/** Why a session ended, for the sign-in page to say (`signed_out` needs no word of its own
 * there: the page that signs out passes it along). */
export type EndReason = "signed_out" | "revoked" | "expired" | "enrolled";

let current: Session | null = null;
let deviceToken: string | null = null;
let refreshTimer: ReturnType<typeof setTimeout> | null = null;
let endReason: EndReason | null = null;
const listeners = new Set<() => void>();

function notify(): void {
  for (const listener of listeners) listener();
}

export const session = {
  get: (): Session | null => current,
  subscribe(listener: () => void): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
  /** Why the last session ended, read once by the sign-in page. */
  takeEndReason(): EndReason | null {
    const reason = endReason;
    endReason = null;
    return reason;
  },
  deviceToken: (): string | null => deviceToken,
  start(tokens: TokenResponse): void {
    current = {
      accessToken: tokens.access_token,
      sessionId: tokens.session_id,
      refreshToken: tokens.refresh_token ?? null,
      enrolmentOnly: Boolean(tokens.mfa_enrollment_required),
    };
    if (tokens.device_token) deviceToken = tokens.device_token;
    endReason = null;
    scheduleRefresh(tokens.expires_in);
    notify();
  },
  end(reason: EndReason): void {
    if (refreshTimer) clearTimeout(refreshTimer);
    refreshTimer = null;
    const had = current !== null;
    current = null;
    if (had && reason !== "signed_out") endReason = reason;
    notify();
  },
};

function scheduleRefresh(expiresIn: number): void {
  if (refreshTimer) clearTimeout(refreshTimer);
  const delay = Math.max(5, expiresIn - REFRESH_MARGIN_S) * 1000;
  refreshTimer = setTimeout(() => void refresh(), delay);
}

export function readCookie(name: string): string | null {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/** New tokens for the session (silently, before the access token expires). */
export async function refresh(): Promise<boolean> {
  const refreshToken = current?.refreshToken ?? null;
  const csrf = readCookie(CSRF_COOKIE);
  if (!refreshToken && !csrf) return false;
  const enrolmentOnly = current?.enrolmentOnly ?? false;
  const { data, response } = refreshToken
    ? await api.POST("/api/v1/auth/refresh", { body: { refresh_token: refreshToken } })
    : await api.POST("/api/v1/auth/refresh", {
        // Cookie mode: no body; the refresh token is the HttpOnly cookie, the CSRF header
        // repeats the cookie that only this origin's script can read.
        body: undefined as never,
        headers: { "X-CSRF-Token": csrf ?? "" },
      });
  if (!data) {
    if (current) session.end(response.status === 401 ? "expired" : "revoked");
    return false;
  }
  session.start({ ...data, mfa_enrollment_required: data.mfa_enrollment_required ?? enrolmentOnly });
  return true;
}

/** At start: a cookie-mode session survives a reload; resume it. */
export async function resume(): Promise<boolean> {
  if (current || !readCookie(CSRF_COOKIE)) return Boolean(current);
  try {
    return await refresh();
  } catch {
    return false;
  }
}

const COOKIE_MODE_PATHS = ["/auth/login", "/auth/verify", "/auth/passkey/verify", "/auth/refresh"];
const UNSIGNED_PATHS = [...COOKIE_MODE_PATHS, "/auth/challenge", "/auth/passkey/options", "/accounts", "/auth/password-reset"];

const signing: Middleware = {
  onRequest({ request, schemaPath }) {
    if (COOKIE_MODE_PATHS.some((p) => schemaPath.endsWith(p))) {
      request.headers.set(SESSION_MODE_HEADER, "cookie");
    }
    const unsigned = UNSIGNED_PATHS.some((p) => schemaPath.endsWith(p));
    if (current && !unsigned) {
      request.headers.set("Authorization", `Bearer ${current.accessToken}`);
    }
    if (!current && schemaPath.endsWith("/auth/logout")) {
      const csrf = readCookie(CSRF_COOKIE);
      if (csrf) request.headers.set("X-CSRF-Token", csrf);
    }
    return request;
  },
  async onResponse({ request, response }) {
    // A signed call refused with invalid_token: the session was revoked (signed out
    // elsewhere, locked by an administrator, a refresh token reused) or has expired.
    if (response.status === 401 && request.headers.has("Authorization") && current) {
      const body = (await response.clone().json().catch(() => null)) as { code?: string } | null;
      if (body?.code === "invalid_token") session.end("revoked");
    }
    return response;
  },
};

export const api = createClient<Paths>({
  baseUrl: globalThis.location.origin,
  credentials: "same-origin",
  // Looked up at each call, not once at start (component tests put their stand-in there).
  fetch: (request: Request) => globalThis.fetch(request),
});
api.use(signing);

/** The data of a call, or its problem thrown as an ApiError (for TanStack Query). */
export async function unwrap<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let result: { data?: T; error?: unknown; response: Response };
  try {
    result = await call;
  } catch {
    throw toApiError(null, undefined);
  }
  if (result.error !== undefined || !result.response.ok) {
    throw toApiError(result.error, result.response) satisfies ApiError;
  }
  return result.data as T;
}

/** Ends the session here and at the service; `reason` is what the sign-in page then says. */
export async function signOut(reason: EndReason = "signed_out"): Promise<void> {
  try {
    await api.POST("/api/v1/auth/logout");
  } finally {
    session.end(reason);
  }
}

/** For tests: forget everything this module holds. */
export function resetForTests(): void {
  session.end("signed_out");
  deviceToken = null;
  endReason = null;
}

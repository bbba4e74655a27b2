import { t } from "../strings";

/** An RFC 9457 problem from the service, or a stand-in when no problem came back. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly retryAfter: number | null = null,
  ) {
    super(detail);
    this.name = "ApiError";
  }
}

type Problemish = { code?: unknown; detail?: unknown; title?: unknown };

export function toApiError(body: unknown, response: Response | undefined): ApiError {
  const status = response?.status ?? 0;
  const retry = Number(response?.headers.get("Retry-After") ?? "");
  const retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
  const problem = (body ?? {}) as Problemish;
  if (typeof problem.code === "string") {
    const detail =
      typeof problem.detail === "string" && problem.detail
        ? problem.detail
        : String(problem.title ?? t.errors.generic);
    return new ApiError(status, problem.code, detail, retryAfter);
  }
  if (status === 0) return new ApiError(0, "network", t.errors.network);
  return new ApiError(status, "unexpected", t.errors.generic, retryAfter);
}

/** What to show a person for any error a call may throw. */
export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.detail;
  return t.errors.generic;
}

export function hasCode(error: unknown, ...codes: string[]): error is ApiError {
  return error instanceof ApiError && codes.includes(error.code);
}

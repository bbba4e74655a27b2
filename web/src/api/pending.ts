/**
 * Endpoints of the API contract that this build of the service may not serve yet (passwordless
 * passkey sign-in, password reset). They are typed here from the contract so that the screens
 * using them compile; once the service serves an endpoint, its generated type (schema.d.ts)
 * takes the place of the one here (see `Paths` in client.ts), so nothing here can shadow it.
 */
import type { components } from "./schema";

type Json<T> = { content: { "application/json": T } };
type NoParams = { query?: never; header?: never; path?: never; cookie?: never };
type Post<Req, Status extends number, Res> = {
  parameters: NoParams;
  get?: never;
  put?: never;
  delete?: never;
  options?: never;
  head?: never;
  patch?: never;
  trace?: never;
  post: {
    parameters: NoParams;
    requestBody: Json<Req>;
    responses: { [S in Status]: { headers: Record<string, unknown> } & Json<Res> } & {
      default: { headers: Record<string, unknown> } & {
        content: { "application/problem+json": components["schemas"]["Problem"] };
      };
    };
  };
};

type PublicKeyOptions = { [key: string]: unknown };

export interface PendingPaths {
  "/api/v1/auth/passkey/options": Post<
    Record<string, never>,
    200,
    { challenge_id: string; public_key: PublicKeyOptions }
  >;
  "/api/v1/auth/passkey/verify": Post<
    { challenge_id: string; credential: { [key: string]: unknown } },
    200,
    components["schemas"]["TokenResponse"]
  >;
  "/api/v1/auth/password-reset": Post<{ email: string }, 202, Record<string, never>>;
  "/api/v1/auth/password-reset/confirm": Post<
    { token: string; new_password: string },
    204,
    never
  >;
}

"""/api/v1/auth/*: login (password, then a second factor), token refresh, logout."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudmfa.api.browser import COOKIE_SECURITY, DeliveryDep
from cloudmfa.api.deps import InfoDep, ServicesDep, has_bearer_token, principal_any
from cloudmfa.api.schemas import (
    CleanStr,
    FactorType,
    Password,
    StrictModel,
    TokenResponse,
    problem_responses,
)
from cloudmfa.factors.base import (
    CodeProof,
    CredentialProof,
    NothingToSend,
    ProofInput,
    PublicKeyRequest,
    SendMessage,
)
from cloudmfa.flows import (
    login,
    password_reset,
    passwordless,
    second_factor,
    self_service,
    sessions,
)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])  # per-IP limit: api/ip_limit.py

OpaqueToken = Annotated[CleanStr, Field(min_length=1, max_length=512)]
FactorId = Annotated[CleanStr, Field(min_length=1, max_length=64)]


class LoginRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "ada@example.com", "password": "plum-orbit-velvet-canyon-42"}]
        }
    )
    # Not validated as an address: a malformed one is simply an unknown account (401).
    email: Annotated[CleanStr, Field(min_length=1, max_length=320)]
    password: Password
    device_token: OpaqueToken | None = None


class LoginFactor(BaseModel):
    """A second factor the sign-in may continue with (`id` "recovery": the recovery codes)."""

    id: str
    type: FactorType
    label: str | None


class MfaRequiredResponse(BaseModel):
    status: Literal["mfa_required"] = "mfa_required"
    mfa_token: str
    expires_in: int
    factors: list[LoginFactor]


class RefreshRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "ZnJlc2gtdG9rZW4tZXhhbXBsZQ"}]}
    )
    refresh_token: OpaqueToken


class ChallengeRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "mfa_token": "bWZhLXRva2VuLWV4YW1wbGU",
                    "factor_id": "3f2b8c1e-6a4d-4f7e-9b1a-2c5d8e9f0a1b",
                }
            ]
        }
    )
    mfa_token: OpaqueToken
    factor_id: FactorId


class CodeSent(BaseModel):
    """A code was sent (sms, email)."""

    delivery: Literal["sms", "email"]
    destination_hint: str
    expires_in: int


class ChallengeOptions(BaseModel):
    """Nothing to send (totp, recovery: an empty object), or WebAuthn request options."""

    public_key: dict[str, Any] | None = Field(
        default=None, description="webauthn: PublicKeyCredentialRequestOptionsJSON"
    )


class VerifyRequest(StrictModel):
    """The `mfa_token` of the password step, the factor chosen, and its proof: a `code`, or a
    WebAuthn `credential` (PublicKeyCredential.toJSON())."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "mfa_token": "bWZhLXRva2VuLWV4YW1wbGU",
                    "factor_id": "3f2b8c1e-6a4d-4f7e-9b1a-2c5d8e9f0a1b",
                    "code": "492039",
                    "remember_device": False,
                }
            ]
        }
    )
    mfa_token: OpaqueToken
    factor_id: FactorId
    code: Annotated[CleanStr, Field(min_length=1, max_length=128)] | None = None
    credential: dict[str, Any] | None = None  # PublicKeyCredential.toJSON(), for WebAuthn
    remember_device: bool = False

    @model_validator(mode="after")
    def _one_proof(self) -> VerifyRequest:
        if (self.code is None) == (self.credential is None):
            raise ValueError("send either `code` or `credential`")
        return self

    def proof(self) -> ProofInput:
        return proof_of(self.code, self.credential)


def proof_of(code: str | None, credential: dict[str, Any] | None) -> ProofInput:
    """The typed proof of a request that sent exactly one of ``code`` and ``credential``."""
    if code is not None:
        return CodeProof(code)
    assert credential is not None
    return CredentialProof(credential)


@router.post(
    "/login",
    summary="Sign in with a password",
    response_model=TokenResponse | MfaRequiredResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422, 429),
)
async def login_route(
    body: LoginRequest, svc: ServicesDep, info: InfoDep, delivery: DeliveryDep
) -> TokenResponse | MfaRequiredResponse:
    """The first step. An account with an active second factor answers `mfa_required` with an
    `mfa_token` and the factors to continue with (unless a valid `device_token`, or the
    `cloudmfa_device` cookie, skips it); one without answers tokens at once. A wrong password
    and an unknown email answer the same 401, in about the same time. With
    `X-CloudMFA-Session: cookie` the refresh token comes as a cookie instead."""
    device_token = delivery.device_token(body.device_token)
    result = await login.login_with_password(
        svc, info, body.email, body.password, device_token=device_token
    )
    if isinstance(result, second_factor.MfaRequired):
        return MfaRequiredResponse(
            mfa_token=result.mfa_token,
            expires_in=result.expires_in,
            factors=[LoginFactor(id=f.id, type=f.type, label=f.label) for f in result.factors],
        )
    return delivery.answer(
        TokenResponse.of(
            result.tokens,
            mfa_enrollment_required=result.mfa_enrollment_required or None,
            mfa_enrollment_deadline=result.mfa_enrollment_deadline,
        )
    )


@router.post(
    "/challenge",
    summary="Ask a factor for a challenge",
    responses={
        200: {
            "model": ChallengeOptions,
            "description": "Nothing to send (totp, recovery) or WebAuthn request options",
        },
        202: {"model": CodeSent, "description": "A code was sent (sms, email)"},
        **problem_responses(401, 422, 429, 502),
    },
)
async def challenge_route(body: ChallengeRequest, svc: ServicesDep, info: InfoDep) -> JSONResponse:
    """The optional middle step: sends a fresh code for sms and email factors (a resend inside
    the cooldown answers 429), answers WebAuthn request options, and nothing for totp and
    recovery codes."""
    outcome = await second_factor.challenge(svc, info, body.mfa_token, body.factor_id)
    match outcome:
        case SendMessage():
            sent = {
                "delivery": outcome.message.channel,
                "destination_hint": outcome.destination_hint,
                "expires_in": outcome.expires_in,
            }
            return JSONResponse(sent, status_code=202)
        case PublicKeyRequest():
            return JSONResponse({"public_key": dict(outcome.options)})
        case NothingToSend():
            return JSONResponse({})


@router.post(
    "/verify",
    summary="Complete sign-in with a second factor",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422, 429),
)
async def verify_route(
    body: VerifyRequest, svc: ServicesDep, info: InfoDep, delivery: DeliveryDep
) -> TokenResponse:
    """The second step: the proof of one offered factor. A wrong proof answers 401
    `invalid_code`; after five, the `mfa_token` is dead (`mfa_token_expired`). With
    `remember_device`, the answer also carries a `device_token` (with
    `X-CloudMFA-Session: cookie`, the `cloudmfa_device` cookie instead)."""
    result = await second_factor.verify(
        svc,
        info,
        mfa_token=body.mfa_token,
        factor_id=body.factor_id,
        proof=body.proof(),
        remember_device=body.remember_device,
    )
    return delivery.answer(TokenResponse.of(result.tokens, device_token=result.device_token))


class PasskeyOptionsResponse(BaseModel):
    """A single-use challenge for a passkey sign-in. The options list no credentials, so the
    browser offers every passkey the user holds for this site: behind a button
    (`navigator.credentials.get({publicKey})`) or in the autofill of a field marked
    `autocomplete="username webauthn"` (`mediation: "conditional"`)."""

    challenge_id: str
    public_key: dict[str, Any] = Field(description="PublicKeyCredentialRequestOptionsJSON")


class PasskeyVerifyRequest(StrictModel):
    """The `challenge_id` of `/auth/passkey/options` and the `credential` the browser answered
    (PublicKeyCredential.toJSON())."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "challenge_id": "Y2hhbGxlbmdlLWlkLWV4YW1wbGU",
                    "credential": {
                        "id": "Y3JlZGVudGlhbC1pZA",
                        "rawId": "Y3JlZGVudGlhbC1pZA",
                        "type": "public-key",
                        "response": {
                            "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0",
                            "authenticatorData": "SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MFAAAAAQ",  # noqa: E501
                            "signature": "MEUCIQ",
                            "userHandle": "dXNlci1oYW5kbGU",
                        },
                        "clientExtensionResults": {},
                    },
                }
            ]
        }
    )
    challenge_id: OpaqueToken
    credential: dict[str, Any]


@router.post(
    "/passkey/options",
    summary="Start a passwordless sign-in with a passkey",
    response_model=PasskeyOptionsResponse,
    responses=problem_responses(422, 429),
)
async def passkey_options_route(svc: ServicesDep) -> PasskeyOptionsResponse:
    """Request options for a discoverable credential (no `allowCredentials`), with user
    verification required, and the id of their challenge: valid about five minutes, once."""
    result = await passwordless.options(svc)
    return PasskeyOptionsResponse(challenge_id=result.challenge_id, public_key=result.public_key)


@router.post(
    "/passkey/verify",
    summary="Complete a passwordless sign-in with a passkey",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422, 429),
)
async def passkey_verify_route(
    body: PasskeyVerifyRequest, svc: ServicesDep, info: InfoDep, delivery: DeliveryDep
) -> TokenResponse:
    """The credential names its account (its user handle); it must verify with user
    verification. Tokens with amr `["hwk", "user", "mfa"]` and acr `phr`; a credential that
    does not verify, or a challenge that expired or was used, answers 401 `invalid_code`."""
    tokens = await passwordless.verify(
        svc, info, body.challenge_id, CredentialProof(body.credential)
    )
    return delivery.answer(TokenResponse.of(tokens))


@router.post(
    "/refresh",
    summary="Rotate a refresh token",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422, 429),
    openapi_extra={"security": [{}, COOKIE_SECURITY]},
)
async def refresh_route(
    svc: ServicesDep, info: InfoDep, delivery: DeliveryDep, body: RefreshRequest | None = None
) -> TokenResponse:
    """A new token set for a single-use refresh token. Presenting one a second time revokes the
    whole session (theft detection). With no body, the `cloudmfa_refresh` cookie is used, and
    `X-CSRF-Token` must equal the `cloudmfa_csrf` cookie (else 403 `csrf_failed`); the new
    refresh token then comes back as a cookie too."""
    if body is not None:
        tokens = await sessions.refresh(svc, info, body.refresh_token)
        return delivery.answer(TokenResponse.of(tokens))
    refresh_token = delivery.refresh_token_from_cookie()
    tokens = await sessions.refresh(svc, info, refresh_token)
    return delivery.answer(TokenResponse.of(tokens), cookies=True)


@router.post(
    "/logout",
    summary="End this session",
    status_code=204,
    responses=problem_responses(401, 403, 429),
    openapi_extra={"security": [{"bearer": []}, COOKIE_SECURITY]},
)
async def logout_route(
    request: Request, svc: ServicesDep, info: InfoDep, delivery: DeliveryDep
) -> Response:
    """Its access and refresh tokens are refused from now on, on every replica. A browser
    session sends no Bearer token: its `cloudmfa_refresh` cookie names the session, with
    `X-CSRF-Token` as for refresh. The session's cookies are cleared either way."""
    if has_bearer_token(request):
        principal = await principal_any(request)
        await self_service.end_session(svc, principal, info, principal.session_id, reason="logout")
    else:
        await sessions.end_by_refresh_token(svc, info, delivery.refresh_token_from_cookie())
    response = Response(status_code=204)
    delivery.clear(response)
    return response


class PasswordResetRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "ada@example.com"}]})
    # Not validated as an address: a malformed one is an unknown account, answered the same.
    email: Annotated[CleanStr, Field(min_length=1, max_length=320)]


class PasswordResetConfirm(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "cmVzZXQtdG9rZW4tZXhhbXBsZQ",
                    "new_password": "saffron-glacier-lantern-97",
                }
            ]
        }
    )
    token: OpaqueToken
    new_password: Password


@router.post(
    "/password-reset",
    summary="Ask for a password-reset link",
    status_code=202,
    responses=problem_responses(422, 429),
)
async def password_reset_route(
    body: PasswordResetRequest, svc: ServicesDep, info: InfoDep, after: BackgroundTasks
) -> JSONResponse:
    """Answers 202 `{}` whether or not the address has an account. When it has, an email
    carries a single-use link, valid 30 minutes, to `{public URL}/reset-password?token=…`."""
    # The work runs once the answer has gone: its time, which differs a little between an
    # address with an account and one without, cannot be read from the answer's.
    after.add_task(password_reset.request_reset, svc, info, body.email)
    return JSONResponse({}, status_code=202)


@router.post(
    "/password-reset/confirm",
    summary="Choose a new password with a reset token",
    status_code=204,
    responses=problem_responses(401, 422, 429),
)
async def password_reset_confirm_route(
    body: PasswordResetConfirm, svc: ServicesDep, info: InfoDep
) -> Response:
    """The token from the link and a new password that meets the policy → 204; every session
    ends and remembered devices are forgotten. Second factors stay: the next login asks for
    one. A used, expired or unknown token answers 401 `invalid_token`."""
    await password_reset.confirm_reset(svc, info, body.token, body.new_password)
    return Response(status_code=204)

"""/api/v1/auth/*: login (password, then a second factor), token refresh, logout."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudmfa.api.deps import AnySessionDep, InfoDep, ServicesDep
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
from cloudmfa.flows import login, second_factor, self_service, sessions

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
    body: LoginRequest, svc: ServicesDep, info: InfoDep
) -> TokenResponse | MfaRequiredResponse:
    """The first step. An account with an active second factor answers `mfa_required` with an
    `mfa_token` and the factors to continue with (unless a valid `device_token` skips it);
    one without answers tokens at once. A wrong password and an unknown email answer the same
    401, in about the same time."""
    result = await login.login_with_password(
        svc, info, body.email, body.password, device_token=body.device_token
    )
    if isinstance(result, second_factor.MfaRequired):
        return MfaRequiredResponse(
            mfa_token=result.mfa_token,
            expires_in=result.expires_in,
            factors=[LoginFactor(id=f.id, type=f.type, label=f.label) for f in result.factors],
        )
    return TokenResponse.of(
        result.tokens,
        mfa_enrollment_required=result.mfa_enrollment_required or None,
        mfa_enrollment_deadline=result.mfa_enrollment_deadline,
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
async def verify_route(body: VerifyRequest, svc: ServicesDep, info: InfoDep) -> TokenResponse:
    """The second step: the proof of one offered factor. A wrong proof answers 401
    `invalid_code`; after five, the `mfa_token` is dead (`mfa_token_expired`). With
    `remember_device`, the answer also carries a `device_token`."""
    result = await second_factor.verify(
        svc,
        info,
        mfa_token=body.mfa_token,
        factor_id=body.factor_id,
        proof=body.proof(),
        remember_device=body.remember_device,
    )
    return TokenResponse.of(result.tokens, device_token=result.device_token)


@router.post(
    "/refresh",
    summary="Rotate a refresh token",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 422, 429),
)
async def refresh_route(body: RefreshRequest, svc: ServicesDep, info: InfoDep) -> TokenResponse:
    """A new token set for a single-use refresh token. Presenting one a second time revokes the
    whole session (theft detection)."""
    return TokenResponse.of(await sessions.refresh(svc, info, body.refresh_token))


@router.post(
    "/logout", summary="End this session", status_code=204, responses=problem_responses(401, 429)
)
async def logout_route(principal: AnySessionDep, svc: ServicesDep, info: InfoDep) -> Response:
    """Its access and refresh tokens are refused from now on, on every replica."""
    await self_service.end_session(svc, principal, info, principal.session_id, reason="logout")
    return Response(status_code=204)

"""/api/v1/auth/*: login (password, then a second factor), token refresh, logout."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from cloudmfa.api.deps import AnySessionDep, InfoDep, ServicesDep
from cloudmfa.api.schemas import CleanStr, Password, StrictModel, TokenResponse, problem_responses
from cloudmfa.flows import login, mfa, self_service, sessions
from cloudmfa.flows.context import RequestInfo
from cloudmfa.services import Services

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])  # per-IP limit: api/ip_limit.py

OpaqueToken = Annotated[CleanStr, Field(min_length=1, max_length=512)]
FactorId = Annotated[CleanStr, Field(min_length=1, max_length=64)]


class LoginRequest(StrictModel):
    # Not validated as an address: a malformed one is simply an unknown account (401).
    email: Annotated[CleanStr, Field(min_length=1, max_length=320)]
    password: Password
    device_token: OpaqueToken | None = None


class FactorOut(BaseModel):
    id: str
    type: str
    label: str | None


class MfaRequiredResponse(BaseModel):
    status: Literal["mfa_required"] = "mfa_required"
    mfa_token: str
    expires_in: int
    factors: list[FactorOut]


class RefreshRequest(StrictModel):
    refresh_token: OpaqueToken


class ChallengeRequest(StrictModel):
    mfa_token: OpaqueToken
    factor_id: FactorId


class VerifyRequest(StrictModel):
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

    def proof(self) -> dict[str, Any]:
        return {"code": self.code} if self.code is not None else {"credential": self.credential}


@router.post(
    "/login",
    response_model=TokenResponse | MfaRequiredResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422, 429),
)
async def login_route(
    body: LoginRequest, svc: ServicesDep, info: InfoDep
) -> TokenResponse | MfaRequiredResponse:
    result = await login.login_with_password(
        svc, info, body.email, body.password, device_token=body.device_token
    )
    if isinstance(result, mfa.MfaRequired):
        return MfaRequiredResponse(
            mfa_token=result.mfa_token,
            expires_in=result.expires_in,
            factors=[FactorOut(id=f.id, type=f.type, label=f.label) for f in result.factors],
        )
    return TokenResponse.of(
        result.tokens,
        mfa_enrollment_required=result.mfa_enrollment_required or None,
        mfa_enrollment_deadline=result.mfa_enrollment_deadline,
    )


@router.post(
    "/challenge",
    responses={
        200: {"description": "Nothing to send (totp, recovery) or WebAuthn request options"},
        202: {"description": "A code was sent (sms, email)"},
        **problem_responses(401, 422, 429, 502),
    },
)
async def challenge_route(body: ChallengeRequest, svc: ServicesDep, info: InfoDep) -> JSONResponse:
    result = await mfa.challenge(svc, info, body.mfa_token, body.factor_id)
    return JSONResponse(result.body, status_code=result.status)


@router.post(
    "/verify",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 422, 429),
)
async def verify_route(body: VerifyRequest, svc: ServicesDep, info: InfoDep) -> TokenResponse:
    return await verify(svc, info, body)


async def verify(svc: Services, info: RequestInfo, body: VerifyRequest) -> TokenResponse:
    result = await mfa.verify(
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
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 422, 429),
)
async def refresh_route(body: RefreshRequest, svc: ServicesDep, info: InfoDep) -> TokenResponse:
    return TokenResponse.of(await sessions.refresh(svc, info, body.refresh_token))


@router.post("/logout", status_code=204, responses=problem_responses(401, 429))
async def logout_route(principal: AnySessionDep, svc: ServicesDep, info: InfoDep) -> Response:
    await self_service.end_session(svc, principal, info, principal.session_id, reason="logout")
    return Response(status_code=204)

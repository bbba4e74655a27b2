"""/api/v1/auth/*: login, token refresh, logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import Field

from cloudmfa.api.deps import AnySessionDep, InfoDep, ServicesDep
from cloudmfa.api.schemas import CleanStr, Password, StrictModel, TokenResponse, problem_responses
from cloudmfa.flows import login, self_service, sessions

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(StrictModel):
    # Not validated as an address: a malformed one is simply an unknown account (401).
    email: Annotated[CleanStr, Field(min_length=1, max_length=320)]
    password: Password


class RefreshRequest(StrictModel):
    refresh_token: Annotated[CleanStr, Field(min_length=1, max_length=512)]


@router.post(
    "/login",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422, 429),
)
async def login_route(body: LoginRequest, svc: ServicesDep, info: InfoDep) -> TokenResponse:
    result = await login.login_with_password(svc, info, body.email, body.password)
    return TokenResponse.of(
        result.tokens,
        mfa_enrollment_required=result.mfa_enrollment_required or None,
        mfa_enrollment_deadline=result.mfa_enrollment_deadline,
    )


@router.post(
    "/refresh",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 422, 429),
)
async def refresh_route(body: RefreshRequest, svc: ServicesDep, info: InfoDep) -> TokenResponse:
    return TokenResponse.of(await sessions.refresh(svc, info, body.refresh_token))


@router.post("/logout", status_code=204, responses=problem_responses(401))
async def logout_route(principal: AnySessionDep, svc: ServicesDep, info: InfoDep) -> Response:
    await self_service.end_session(svc, principal, info, principal.session_id, reason="logout")
    return Response(status_code=204)

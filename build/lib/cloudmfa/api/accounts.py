"""POST /api/v1/accounts: self sign-up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from cloudmfa.api.deps import InfoDep, ServicesDep
from cloudmfa.api.schemas import CleanStr, Password, StrictModel, problem_responses
from cloudmfa.flows import accounts

router = APIRouter(prefix="/api/v1", tags=["accounts"])  # per-IP limit: api/ip_limit.py


class SignUpRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password": "plum-orbit-velvet-canyon-42",
                    "display_name": "Ada",
                }
            ]
        }
    )
    email: Annotated[EmailStr, Field(max_length=320)]
    password: Password
    display_name: Annotated[CleanStr, Field(max_length=200)] | None = None


class AccountCreated(BaseModel):
    id: str
    email: str


@router.post(
    "/accounts",
    summary="Sign up",
    status_code=201,
    response_model=AccountCreated,
    responses=problem_responses(403, 409, 422, 429),
)
async def sign_up(body: SignUpRequest, svc: ServicesDep, info: InfoDep) -> AccountCreated:
    """Creates an account with a password that meets the policy (422 `weak_password` or
    `breached_password` says why). Switched off with CLOUDMFA_SIGNUP_ENABLED=false (403)."""
    user = await accounts.sign_up(
        svc, info, email=body.email, password=body.password, display_name=body.display_name
    )
    return AccountCreated(id=user.id, email=user.email)

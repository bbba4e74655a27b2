"""/api/v1/me/factors, /me/recovery-codes and /me/devices: a user's own second factors.

A session that the MFA policy confines to enrolment may only enrol and activate here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudmfa.api.auth import proof_of
from cloudmfa.api.deps import AnySessionDep, InfoDep, PrincipalDep, ServicesDep
from cloudmfa.api.schemas import (
    CleanStr,
    EnrollableFactorType,
    Factor,
    FactorStatus,
    FactorType,
    StrictModel,
    parse_id,
    problem_responses,
)
from cloudmfa.factors.base import ProofInput
from cloudmfa.flows import devices, enrolment

router = APIRouter(prefix="/api/v1/me", tags=["factors"])


class FactorList(BaseModel):
    factors: list[Factor]


class EnrolRequest(StrictModel):
    """`type` picks the factor; `email` is for an email factor, `phone` (E.164) for SMS."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "totp", "label": "Phone authenticator"},
                {"type": "sms", "phone": "+14155550123"},
            ]
        }
    )
    type: EnrollableFactorType
    label: Annotated[CleanStr, Field(min_length=1, max_length=100)] | None = None
    email: Annotated[CleanStr, Field(max_length=320)] | None = None
    phone: Annotated[CleanStr, Field(max_length=32)] | None = None

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type"}, exclude_none=True)


class EnrolResponse(BaseModel):
    """`id`, `type`, `status` and what the factor type shows once (a TOTP secret and QR code,
    a destination hint, WebAuthn creation options)."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: FactorType
    status: FactorStatus
    secret: str | None = Field(default=None, description="totp: the base32 seed, shown once")
    otpauth_uri: str | None = Field(default=None, description="totp: the otpauth:// URI")
    qr_svg: str | None = Field(default=None, description="totp: the URI as an SVG QR code")
    destination_hint: str | None = Field(default=None, description="sms, email: where it went")
    public_key: dict[str, Any] | None = Field(
        default=None, description="webauthn: PublicKeyCredentialCreationOptionsJSON"
    )


class ActivateRequest(StrictModel):
    """The proof that the factor works: a `code`, or for WebAuthn a `credential`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"code": "492039"}]})
    code: Annotated[CleanStr, Field(min_length=1, max_length=128)] | None = None
    credential: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_proof(self) -> ActivateRequest:
        if (self.code is None) == (self.credential is None):
            raise ValueError("send either `code` or `credential`")
        return self

    def proof(self) -> ProofInput:
        return proof_of(self.code, self.credential)


class ActivateResponse(BaseModel):
    id: str
    type: FactorType
    status: FactorStatus
    recovery_codes: list[str] | None = Field(
        default=None, description="With the first factor only: 10 single-use codes, shown once"
    )


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]


class DeviceOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime | None
    user_agent: str | None
    ip: str | None


class DeviceList(BaseModel):
    devices: list[DeviceOut]


@router.get(
    "/factors",
    summary="List my factors",
    response_model=FactorList,
    responses=problem_responses(401, 403),
)
async def list_factors(principal: PrincipalDep, svc: ServicesDep) -> FactorList:
    """The caller's second factors, pending and active; secrets never appear here."""
    stored = await enrolment.list_factors(svc, principal)
    return FactorList(factors=[Factor.of(f) for f in stored])


@router.post(
    "/factors",
    summary="Start enrolling a factor",
    status_code=201,
    response_model=EnrolResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 422, 429, 502),
)
async def enrol_factor(
    body: EnrolRequest, principal: AnySessionDep, svc: ServicesDep, info: InfoDep
) -> EnrolResponse:
    """Creates a pending factor and answers what its type shows once: a TOTP secret, URI and
    QR code; a destination hint after sending a code; WebAuthn creation options. A session
    confined to enrolment may enrol its first factor (if signed in within the step-up window);
    any further factor needs step-up."""
    factor, started = await enrolment.enrol(svc, principal, info, body.type, body.params())
    return EnrolResponse(id=factor.id, type=factor.type, status=factor.status, **started.shown)


@router.post(
    "/factors/{factor_id}/activate",
    summary="Activate a pending factor",
    response_model=ActivateResponse,
    response_model_exclude_none=True,
    responses=problem_responses(401, 403, 404, 422),
)
async def activate_factor(
    factor_id: str,
    body: ActivateRequest,
    principal: AnySessionDep,
    svc: ServicesDep,
    info: InfoDep,
) -> ActivateResponse:
    """Proves the pending factor works (a code it produced, or a WebAuthn credential) and makes
    it active. The first factor also answers the recovery codes. Activating does not upgrade
    the session that did it: it stays confined until a sign-in with the factor."""
    result = await enrolment.activate(svc, principal, info, parse_id(factor_id), body.proof())
    return ActivateResponse(
        id=result.factor.id,
        type=result.factor.type,
        status=result.factor.status,
        recovery_codes=result.recovery_codes,
    )


@router.delete(
    "/factors/{factor_id}",
    summary="Remove a factor",
    status_code=204,
    responses=problem_responses(401, 403, 404),
)
async def remove_factor(
    factor_id: str, principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> Response:
    """Needs step-up. Also forgets every remembered device; removing the last factor deletes
    the recovery codes."""
    await enrolment.remove(svc, principal, info, parse_id(factor_id))
    return Response(status_code=204)


@router.post(
    "/recovery-codes",
    summary="Replace my recovery codes",
    response_model=RecoveryCodes,
    responses=problem_responses(401, 403, 422),
)
async def regenerate_recovery_codes(
    principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> RecoveryCodes:
    """Ten new single-use codes, shown once; the old set stops working. Needs step-up and an
    active factor (without one: 422 validation_error)."""
    return RecoveryCodes(
        recovery_codes=await enrolment.regenerate_recovery_codes(svc, principal, info)
    )


@router.get(
    "/devices",
    summary="List my remembered devices",
    response_model=DeviceList,
    responses=problem_responses(401, 403),
)
async def list_devices(principal: PrincipalDep, svc: ServicesDep) -> DeviceList:
    """Devices that skip the second factor at login (`remember_device` on /auth/verify)."""
    remembered = await devices.list_devices(svc, principal)
    return DeviceList(
        devices=[
            DeviceOut(
                id=d.id,
                created_at=d.created_at,
                last_used_at=d.last_used_at,
                user_agent=d.user_agent,
                ip=d.ip,
            )
            for d in remembered
        ]
    )


@router.delete(
    "/devices/{device_id}",
    summary="Forget a remembered device",
    status_code=204,
    responses=problem_responses(401, 403, 404),
)
async def forget_device(
    device_id: str, principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> Response:
    """Its next login asks for the second factor again."""
    await devices.forget_device(svc, principal, info, parse_id(device_id))
    return Response(status_code=204)

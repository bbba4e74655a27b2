"""/api/v1/me/factors, /me/recovery-codes and /me/devices: a user's own second factors.

A session that the MFA policy confines to enrolment may only enrol and activate here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudmfa.api.auth import proof_of
from cloudmfa.api.deps import AnySessionDep, InfoDep, PrincipalDep, ServicesDep
from cloudmfa.api.schemas import CleanStr, StrictModel, parse_id, problem_responses
from cloudmfa.factors.base import ProofInput, StoredFactor
from cloudmfa.flows import devices, enrolment

router = APIRouter(prefix="/api/v1/me", tags=["factors"])


class FactorOut(BaseModel):
    id: str
    type: str
    label: str | None
    status: str
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, factor: StoredFactor) -> FactorOut:
        return cls(
            id=factor.id,
            type=factor.type,
            label=factor.label,
            status=factor.status,
            created_at=factor.created_at,
            last_used_at=factor.last_used_at,
        )


class FactorList(BaseModel):
    factors: list[FactorOut]


class EnrolRequest(StrictModel):
    type: Annotated[CleanStr, Field(min_length=1, max_length=16)]
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
    type: str
    status: str


class ActivateRequest(StrictModel):
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
    type: str
    status: str
    recovery_codes: list[str] | None = None


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


@router.get("/factors", response_model=FactorList, responses=problem_responses(401, 403))
async def list_factors(principal: PrincipalDep, svc: ServicesDep) -> FactorList:
    return FactorList(
        factors=[FactorOut.of(f) for f in await enrolment.list_factors(svc, principal)]
    )


@router.post(
    "/factors",
    status_code=201,
    response_model=EnrolResponse,
    responses=problem_responses(401, 403, 422, 429, 502),
)
async def enrol_factor(
    body: EnrolRequest, principal: AnySessionDep, svc: ServicesDep, info: InfoDep
) -> EnrolResponse:
    factor, started = await enrolment.enrol(svc, principal, info, body.type, body.params())
    return EnrolResponse(id=factor.id, type=factor.type, status=factor.status, **started.shown)


@router.post(
    "/factors/{factor_id}/activate",
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
    result = await enrolment.activate(svc, principal, info, parse_id(factor_id), body.proof())
    return ActivateResponse(
        id=result.factor.id,
        type=result.factor.type,
        status=result.factor.status,
        recovery_codes=result.recovery_codes,
    )


@router.delete("/factors/{factor_id}", status_code=204, responses=problem_responses(401, 403, 404))
async def remove_factor(
    factor_id: str, principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> Response:
    await enrolment.remove(svc, principal, info, parse_id(factor_id))
    return Response(status_code=204)


@router.post(
    "/recovery-codes", response_model=RecoveryCodes, responses=problem_responses(401, 403, 422)
)
async def regenerate_recovery_codes(
    principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> RecoveryCodes:
    return RecoveryCodes(
        recovery_codes=await enrolment.regenerate_recovery_codes(svc, principal, info)
    )


@router.get("/devices", response_model=DeviceList, responses=problem_responses(401, 403))
async def list_devices(principal: PrincipalDep, svc: ServicesDep) -> DeviceList:
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


@router.delete("/devices/{device_id}", status_code=204, responses=problem_responses(401, 403, 404))
async def forget_device(
    device_id: str, principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> Response:
    await devices.forget_device(svc, principal, info, parse_id(device_id))
    return Response(status_code=204)

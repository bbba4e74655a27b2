"""/api/v1/me: the signed-in user, their sessions, password and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudmfa.api.deps import AnySessionDep, InfoDep, PrincipalDep, ServicesDep
from cloudmfa.api.schemas import (
    CleanStr,
    Limit,
    Password,
    StrictModel,
    decode_cursor,
    encode_cursor,
    parse_id,
    problem_responses,
)
from cloudmfa.flows import accounts, self_service

router = APIRouter(prefix="/api/v1/me", tags=["me"])


class Me(BaseModel):
    id: str
    email: str
    display_name: str | None
    created_at: datetime
    mfa_enabled: bool
    roles: list[str]


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    last_seen_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class SessionList(BaseModel):
    sessions: list[SessionOut]


class AuditEventOut(BaseModel):
    id: str
    at: datetime
    type: str
    actor_id: str | None
    subject_id: str | None
    ip: str | None
    user_agent: str | None
    outcome: str
    details: dict[str, Any]


class EventList(BaseModel):
    events: list[AuditEventOut]
    next_cursor: str | None


class Actor(BaseModel):
    role: Literal["user", "admin"] = Field(
        description="`user`: the signed-in user themself; `admin`: an administrator, whose "
        "id, address and user agent are left out (`actor_id`, `ip` and `user_agent` are null)"
    )


class OwnAuditEventOut(AuditEventOut):
    actor: Actor


class OwnEventList(BaseModel):
    events: list[OwnAuditEventOut]
    next_cursor: str | None


class PasswordChange(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "current_password": "plum-orbit-velvet-canyon-42",
                    "new_password": "saffron-glacier-lantern-97",
                }
            ]
        }
    )
    current_password: Password
    new_password: Password


def _next_cursor(rows: list[dict[str, Any]], limit: int) -> str | None:
    return encode_cursor(rows[-1]["seq"]) if len(rows) == limit else None


def event_page(rows: list[dict[str, Any]], limit: int) -> EventList:
    return EventList(
        events=[AuditEventOut(**row) for row in rows], next_cursor=_next_cursor(rows, limit)
    )


@router.get("", summary="Who am I", response_model=Me, responses=problem_responses(401))
async def get_me(principal: AnySessionDep) -> Me:
    """The signed-in user. Any session may read it, one confined to enrolment too."""
    user = principal.user
    return Me(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        created_at=user.created_at,
        mfa_enabled=principal.active_factor_count > 0,
        roles=list(user.roles),
    )


@router.get(
    "/sessions",
    summary="List my sessions",
    response_model=SessionList,
    responses=problem_responses(401, 403),
)
async def list_sessions(principal: PrincipalDep, svc: ServicesDep) -> SessionList:
    """The caller's live sessions; `current` marks the one making this call."""
    rows = await self_service.list_sessions(svc, principal)
    return SessionList(
        sessions=[
            SessionOut(
                id=s.id,
                created_at=s.created_at,
                last_seen_at=s.last_seen_at,
                ip=s.ip,
                user_agent=s.user_agent,
                current=s.id == principal.session_id,
            )
            for s in rows
        ]
    )


@router.delete(
    "/sessions/{session_id}",
    summary="End one of my sessions",
    status_code=204,
    responses=problem_responses(401, 403, 404),
)
async def revoke_session(
    session_id: str, principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> Response:
    """Its access and refresh tokens are refused from now on."""
    await self_service.end_session(
        svc, principal, info, parse_id(session_id), reason="revoked_by_user"
    )
    return Response(status_code=204)


@router.post(
    "/password",
    summary="Change my password",
    status_code=204,
    responses=problem_responses(401, 403, 422, 429),
)
async def change_password(
    body: PasswordChange, principal: PrincipalDep, svc: ServicesDep, info: InfoDep
) -> Response:
    """Needs step-up and the current password (a wrong one answers 401 and counts against the
    account's failure limit). The new one meets the password policy; other sessions end."""
    await accounts.change_password(
        svc,
        principal,
        info,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    return Response(status_code=204)


@router.get(
    "/events",
    summary="My audit events",
    response_model=OwnEventList,
    responses=problem_responses(401, 403, 422),
)
async def list_events(
    principal: PrincipalDep,
    svc: ServicesDep,
    limit: Annotated[Limit, Query()] = 50,
    cursor: Annotated[CleanStr | None, Query(max_length=200)] = None,
) -> OwnEventList:
    """Events where the caller is actor or subject, newest first, paged by `cursor`. An event an
    administrator caused names its actor only as `{"role": "admin"}`."""
    before = decode_cursor(cursor, int) if cursor else None
    rows = await self_service.list_own_events(svc, principal, before_seq=before, limit=limit)
    return OwnEventList(
        events=[OwnAuditEventOut(**row) for row in rows], next_cursor=_next_cursor(rows, limit)
    )

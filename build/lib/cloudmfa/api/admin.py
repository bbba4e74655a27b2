"""/api/v1/admin: users and the audit trail, for the admin role.

Every route needs an administrator's session that verified a second factor, whatever the MFA
policy; lock, unlock and MFA reset also need step-up."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from cloudmfa.api.deps import AdminDep, InfoDep, ServicesDep
from cloudmfa.api.me import EventList, event_page
from cloudmfa.api.schemas import (
    CleanStr,
    Factor,
    Limit,
    decode_cursor,
    encode_cursor,
    parse_id,
    problem_responses,
)
from cloudmfa.flows import admin
from cloudmfa.store.users import User

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


class AdminUser(BaseModel):
    id: str
    email: str
    display_name: str | None
    created_at: datetime
    roles: list[str]
    locked: bool
    locked_at: datetime | None


class AdminUserDetail(AdminUser):
    mfa_enabled: bool
    factors: list[Factor]


class UserList(BaseModel):
    users: list[AdminUser]
    next_cursor: str | None


def _admin_user(user: User) -> AdminUser:
    return AdminUser(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        created_at=user.created_at,
        roles=list(user.roles),
        locked=user.locked_at is not None,
        locked_at=user.locked_at,
    )


@router.get(
    "/users",
    summary="Search users",
    response_model=UserList,
    responses=problem_responses(401, 403, 422),
)
async def list_users(
    _admin: AdminDep,
    svc: ServicesDep,
    query: Annotated[CleanStr | None, Query(max_length=320)] = None,
    limit: Annotated[Limit, Query()] = 50,
    cursor: Annotated[CleanStr | None, Query(max_length=1000)] = None,
) -> UserList:
    """Users in email order; `query` matches a substring of the email or display name,
    case-insensitively. Pages by `cursor` (`next_cursor` is null on the last page)."""
    after = decode_cursor(cursor, str) if cursor else None
    users = await admin.search_users(svc, query=query or None, after_email=after, limit=limit)
    next_cursor = encode_cursor(users[-1].email) if len(users) == limit else None
    return UserList(users=[_admin_user(u) for u in users], next_cursor=next_cursor)


@router.get(
    "/users/{user_id}",
    summary="Read a user",
    response_model=AdminUserDetail,
    responses=problem_responses(401, 403, 404),
)
async def get_user(user_id: str, _admin: AdminDep, svc: ServicesDep) -> AdminUserDetail:
    """The user with their factors (never a secret)."""
    user, user_factors = await admin.get_user(svc, parse_id(user_id))
    summaries = [Factor.of(f) for f in user_factors]
    return AdminUserDetail(
        **_admin_user(user).model_dump(),
        mfa_enabled=any(f.status == "active" for f in summaries),
        factors=summaries,
    )


@router.post(
    "/users/{user_id}/lock",
    summary="Lock a user",
    status_code=204,
    responses=problem_responses(401, 403, 404),
)
async def lock_user(user_id: str, principal: AdminDep, svc: ServicesDep, info: InfoDep) -> Response:
    """Revokes all of the user's sessions and ends their pending sign-ins. Needs step-up; an
    administrator cannot lock their own account."""
    await admin.set_locked(svc, principal, info, parse_id(user_id), locked=True)
    return Response(status_code=204)


@router.post(
    "/users/{user_id}/unlock",
    summary="Unlock a user",
    status_code=204,
    responses=problem_responses(401, 403, 404),
)
async def unlock_user(
    user_id: str, principal: AdminDep, svc: ServicesDep, info: InfoDep
) -> Response:
    """The user may sign in again. Needs step-up."""
    await admin.set_locked(svc, principal, info, parse_id(user_id), locked=False)
    return Response(status_code=204)


@router.delete(
    "/users/{user_id}/factors",
    summary="Reset a user's MFA",
    status_code=204,
    responses=problem_responses(401, 403, 404),
)
async def reset_mfa(user_id: str, principal: AdminDep, svc: ServicesDep, info: InfoDep) -> Response:
    """Every factor, recovery code and remembered device goes; sessions end. Needs step-up."""
    await admin.reset_mfa(svc, principal, info, parse_id(user_id))
    return Response(status_code=204)


@router.get(
    "/audit",
    summary="Read the audit trail",
    response_model=EventList,
    responses=problem_responses(401, 403, 422),
)
async def list_audit(
    _admin: AdminDep,
    svc: ServicesDep,
    user_id: Annotated[CleanStr | None, Query(max_length=64)] = None,
    type: Annotated[CleanStr | None, Query(max_length=64)] = None,  # noqa: A002 (API.md's name)
    limit: Annotated[Limit, Query()] = 50,
    cursor: Annotated[CleanStr | None, Query(max_length=200)] = None,
) -> EventList:
    """Events newest first; `user_id` matches events where the user is actor or subject,
    `type` one event type (e.g. `login.failed`)."""
    before = decode_cursor(cursor, int) if cursor else None
    rows = await admin.list_audit(
        svc, user_id=user_id or None, type_=type or None, before_seq=before, limit=limit
    )
    return event_page(rows, limit)

"""Administration (API.md "Administration"): finding users, locking them, resetting their MFA,
reading the trail. The edge lets only an administrator's session that verified a second factor
in; the changes also need step-up (a recent sign-in with that factor)."""

from __future__ import annotations

from typing import Any

from cloudmfa.errors import Forbidden, NotFound
from cloudmfa.factors.base import StoredFactor
from cloudmfa.flows import notifications
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import AdminResets, Principals
from cloudmfa.flows.principal import Principal, require_recent_authentication
from cloudmfa.flows.sessions import revoke_all_for_user
from cloudmfa.store import audit as audit_repo
from cloudmfa.store import devices as device_repo
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import recovery_codes as code_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import record
from cloudmfa.store.users import User


async def search_users(
    svc: Principals, *, query: str | None, after_email: str | None, limit: int
) -> list[User]:
    async with svc.reader.connect() as conn:
        return await user_repo.search(conn, query=query, after_email=after_email, limit=limit)


async def get_user(svc: Principals, user_id: str) -> tuple[User, list[StoredFactor]]:
    async with svc.reader.connect() as conn:
        user = await user_repo.get_by_id(conn, user_id)
        if user is None:
            raise NotFound("No such user.")
        return user, await factor_repo.list_factors(conn, user_id)


async def set_locked(
    svc: Principals, admin: Principal, info: RequestInfo, user_id: str, *, locked: bool
) -> None:
    await require_recent_authentication(svc, admin)
    if locked and user_id == admin.user.id:
        # An administrator locking their own account would end their session mid-task and
        # could leave the deployment with no administrator at all.
        raise Forbidden("Administrators cannot lock their own account.")
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        user = await user_repo.get_by_id(conn, user_id)
        if user is None:
            raise NotFound("No such user.")
        details: dict[str, Any] = {}
        if locked:
            await user_repo.set_locked(conn, user_id, user.locked_at or now, now)
            revoked = await revoke_all_for_user(conn, svc, user_id, reason="account_locked")
            details["sessions_revoked"] = len(revoked)
        else:
            await user_repo.set_locked(conn, user_id, None, now)
        await record(
            conn,
            now,
            info.event(
                "account.locked" if locked else "account.unlocked",
                subject_id=user_id,
                actor_id=admin.user.id,
                **details,
            ),
        )


async def reset_mfa(svc: AdminResets, admin: Principal, info: RequestInfo, user_id: str) -> None:
    """The administrator's MFA reset: every factor, recovery code, remembered device and
    session of the user goes."""
    await require_recent_authentication(svc, admin)
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        user = await user_repo.get_by_id(conn, user_id)
        if user is None:
            raise NotFound("No such user.")
        removed = await factor_repo.delete_all(conn, user_id)
        await code_repo.delete_all(conn, user_id)
        forgotten = await device_repo.forget_all(conn, user_id)
        revoked = await revoke_all_for_user(conn, svc, user_id, reason="mfa_reset")
        await record(
            conn,
            now,
            info.event(
                "mfa.reset",
                subject_id=user_id,
                actor_id=admin.user.id,
                factors_removed=removed,
                devices_forgotten=forgotten,
                sessions_revoked=len(revoked),
            ),
        )
        notice = await notifications.notify(
            conn, svc, to=user.email, kind="mfa_reset", user_id=user.id
        )
    await svc.outbox.dispatch(notice)


async def list_audit(
    svc: Principals,
    *,
    user_id: str | None,
    type_: str | None,
    before_seq: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    async with svc.reader.connect() as conn:
        return await audit_repo.list_events(
            conn, user_id=user_id, type_=type_, before_seq=before_seq, limit=limit
        )

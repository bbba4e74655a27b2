"""Accounts: self sign-up, administrators created from the command line, password changes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from cloudmfa.email_address import normalise_email
from cloudmfa.errors import EmailTaken, Forbidden, InvalidCredentials, RateLimited
from cloudmfa.flows import notifications, throttling
from cloudmfa.flows.audit_log import record_separately
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import Accounts
from cloudmfa.flows.principal import Principal, require_recent_authentication
from cloudmfa.flows.sessions import revoke_all_for_user
from cloudmfa.store import devices as device_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import AuditEvent, record
from cloudmfa.store.users import DuplicateEmail, User


async def sign_up(
    svc: Accounts, info: RequestInfo, *, email: str, password: str, display_name: str | None
) -> User:
    if not svc.settings.signup_enabled:
        raise Forbidden("Self sign-up is switched off on this service.")
    return await _create_account(
        svc, info, email=email, password=password, display_name=display_name, roles=()
    )


async def _create_account(
    svc: Accounts,
    info: RequestInfo,
    *,
    email: str,
    password: str,
    display_name: str | None,
    roles: tuple[str, ...],
) -> User:
    email = normalise_email(email)
    svc.policy.check(password, email=email)
    async with svc.reader.connect() as conn:  # fail fast, before paying for a hash
        if await user_repo.get_by_email(conn, email) is not None:
            raise EmailTaken("An account with this email already exists.")
    now = svc.clock.now()
    user = User(
        id=str(uuid.uuid4()),
        email=email,
        display_name=display_name,
        password_hash=await svc.hashing.hash(password),
        roles=roles,
        locked_at=None,
        created_at=now,
    )
    async with svc.engine.begin() as conn:
        try:
            await user_repo.insert_user(conn, user)
        except DuplicateEmail:
            raise EmailTaken("An account with this email already exists.") from None
        await record(
            conn,
            now,
            info.event("account.created", subject_id=user.id, roles=list(roles)),
        )
    return user


@dataclass(frozen=True, slots=True)
class AdminResult:
    user: User
    created: bool


async def create_admin(svc: Accounts, *, email: str, password: str) -> AdminResult:
    """Create an account with the admin role, or add the role to an existing account."""
    email = normalise_email(email)
    async with svc.engine.begin() as conn:
        existing = await user_repo.get_by_email(conn, email)
        if existing is not None:
            if not existing.is_admin:
                now = svc.clock.now()
                await user_repo.set_roles(conn, existing.id, (*existing.roles, "admin"), now)
                await record(
                    conn,
                    now,
                    AuditEvent(
                        type="role.granted",
                        subject_id=existing.id,
                        details={"role": "admin", "via": "cli"},
                    ),
                )
            return AdminResult(user=existing, created=False)
    user = await _create_account(
        svc, RequestInfo(), email=email, password=password, display_name=None, roles=("admin",)
    )
    return AdminResult(user=user, created=True)


async def change_password(
    svc: Accounts,
    principal: Principal,
    info: RequestInfo,
    *,
    current_password: str,
    new_password: str,
) -> None:
    await require_recent_authentication(svc, principal)
    user = principal.user
    # A wrong current password is a failed attempt against the account limit (API.md
    # "Throttling"), or a stolen session could guess at the password without end.
    try:
        await svc.throttle.reserve(user.email)
    except RateLimited as exc:
        await throttling.record_rate_limited(svc, info, user.id, exc)
        raise
    if not (await svc.hashing.verify(user.password_hash, current_password)).ok:
        await record_separately(
            svc,
            info.event(
                "password.change_failed",
                subject_id=user.id,
                outcome="failure",
                reason="wrong_current_password",
            ),
        )
        raise InvalidCredentials("The current password is wrong.")
    await svc.throttle.release(user.email)
    svc.policy.check(new_password, email=user.email)
    new_hash = await svc.hashing.hash(new_password)
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        await user_repo.set_password_hash(conn, user.id, new_hash, now)
        revoked = await revoke_all_for_user(
            conn, svc, user.id, reason="password_changed", except_session=principal.session_id
        )
        forgotten = await device_repo.forget_all(conn, user.id)
        await record(
            conn,
            now,
            info.event(
                "password.changed",
                subject_id=user.id,
                sessions_revoked=len(revoked),
                devices_forgotten=forgotten,
            ),
        )
        notice = await notifications.notify(
            conn, svc, to=user.email, kind="password_changed", user_id=user.id
        )
    await svc.outbox.dispatch(notice)

"""The login journey (API.md "Login"): password first, then, when the account has one, a
second factor. This module knows the order of the steps, not how any factor works."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudmfa.errors import AccountLocked, InvalidCredentials
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.principal import enrollment_deadline, must_enroll
from cloudmfa.flows.sessions import TokenSet, open_session
from cloudmfa.services import Services
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import AuditEvent, record


@dataclass(frozen=True, slots=True)
class Authenticated:
    tokens: TokenSet
    mfa_enrollment_required: bool = False
    mfa_enrollment_deadline: datetime | None = None


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def login_with_password(svc: Services, info: RequestInfo, email: str, password: str) -> Authenticated:
    email = normalise_email(email)
    async with svc.engine.connect() as conn:
        user = await user_repo.get_by_email(conn, email)
    if user is None:
        # Same answer, in about the same time, as a wrong password.
        await svc.hashing.verify_dummy(password)
        await _record_failure(svc, info, None, "unknown_account")
        raise InvalidCredentials("The email or password is wrong.")
    result = await svc.hashing.verify(user.password_hash, password)
    if not result.ok:
        await _record_failure(svc, info, user.id, "wrong_password")
        raise InvalidCredentials("The email or password is wrong.")
    if user.locked_at is not None:
        # Only told to someone who knows the password, so it reveals nothing to a guesser.
        await _record_failure(svc, info, user.id, "account_locked")
        raise AccountLocked("This account is locked; contact an administrator.")

    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        if result.new_hash:
            await user_repo.set_password_hash(conn, user.id, result.new_hash, now)
        active = await user_repo.count_active_factors(conn, user.id)
        # The second-factor branch (mfa_required) arrives with the factor modules; until then
        # every account here has no active factor and signs in with the password alone.
        tokens = await open_session(
            conn, svc, user_id=user.id, info=info, amr=["pwd"], acr=None, mfa_verified=False, now=now
        )
        await record(
            conn,
            now,
            AuditEvent(
                type="login.succeeded",
                actor_id=user.id,
                subject_id=user.id,
                ip=info.ip,
                user_agent=info.clipped_user_agent(),
                details={"amr": ["pwd"], "session_id": tokens.session_id},
            ),
        )
    enroll = must_enroll(svc, user, active, now)
    deadline = enrollment_deadline(svc, user) if active == 0 and not enroll else None
    return Authenticated(
        tokens=tokens,
        mfa_enrollment_required=enroll,
        mfa_enrollment_deadline=deadline if svc.settings.mfa_policy == "required" else None,
    )


async def _record_failure(svc: Services, info: RequestInfo, user_id: str | None, reason: str) -> None:
    async with svc.engine.begin() as conn:
        await record(
            conn,
            svc.clock.now(),
            AuditEvent(
                type="login.failed",
                outcome="failure",
                actor_id=user_id,
                subject_id=user_id,
                ip=info.ip,
                user_agent=info.clipped_user_agent(),
                details={"reason": reason},
            ),
        )

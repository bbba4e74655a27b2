"""Who is calling: an access token checked against signature, expiry, revocation and the
account's state, and the rules that follow from it (MFA policy, step-up)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cloudmfa.config import MfaPolicy
from cloudmfa.errors import (
    Forbidden,
    InvalidToken,
    MfaEnrollmentRequired,
    ReauthenticationRequired,
)
from cloudmfa.flows.sessions import is_revoked
from cloudmfa.security.tokens import AccessClaims
from cloudmfa.services import Services
from cloudmfa.store import sessions as session_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.users import User


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    claims: AccessClaims
    active_factor_count: int
    enrollment_required: bool  # the MFA policy confines this session to enrolling a factor

    @property
    def session_id(self) -> str:
        return self.claims.sid

    def require_enrolled(self) -> None:
        if self.enrollment_required:
            raise MfaEnrollmentRequired(
                "This account must set up a second factor before it can do this."
            )

    def require_admin(self) -> None:
        self.require_enrolled()
        if not self.user.is_admin:
            raise Forbidden("This needs the admin role.")


def enrollment_deadline(svc: Services, user: User) -> datetime | None:
    """The end of the enrolment grace period, or None when there is none."""
    if svc.settings.mfa_grace_days <= 0:
        return None
    return user.created_at + timedelta(days=svc.settings.mfa_grace_days)


def must_enroll(svc: Services, user: User, active_factor_count: int, now: datetime) -> bool:
    if svc.settings.mfa_policy is not MfaPolicy.REQUIRED or active_factor_count > 0:
        return False
    deadline = enrollment_deadline(svc, user)
    return deadline is None or now >= deadline


async def authenticate(svc: Services, access_token: str) -> Principal:
    ring = svc.tokens.ring
    if ring.needs_reload():
        await svc.reload_keys()
    kid = svc.tokens.unverified_kid(access_token)
    if kid and not ring.knows(kid) and ring.may_reload_for_unknown_kid():
        await svc.reload_keys()  # perhaps rotated on another replica a moment ago
    claims = svc.tokens.verify(access_token)
    if await is_revoked(svc, claims.sid):
        raise InvalidToken("The session has ended.")
    async with svc.reader.connect() as conn:
        user = await user_repo.get_by_id(conn, claims.sub)
        if user is None or user.locked_at is not None:
            raise InvalidToken("The session has ended.")
        count = await svc.factor_types.count_active(conn, user.id)
    return Principal(
        user=user,
        claims=claims,
        active_factor_count=count,
        enrollment_required=must_enroll(svc, user, count, svc.clock.now()),
    )


async def require_recent_authentication(svc: Services, principal: Principal) -> None:
    """Step-up (API.md): signed in within the re-authentication window, and with a second
    factor when the account has one. A remembered device does not count as that factor."""
    async with svc.reader.connect() as conn:
        session = await session_repo.get_session(conn, principal.session_id)
    if session is None:
        raise InvalidToken("The session has ended.")
    window = timedelta(seconds=svc.settings.reauth_window_s)
    if svc.clock.now() - session.auth_time > window:
        raise ReauthenticationRequired("Sign in again to do this.")
    if principal.active_factor_count > 0 and not session.mfa_verified:
        raise ReauthenticationRequired("Sign in again with your second factor to do this.")

"""Who is calling: an access token checked against signature, expiry, revocation and the
account's state, and the rules that follow from what the session proved (MFA policy,
administration, step-up): its amr and auth_time, never the account's current factors alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cloudmfa.config import MfaPolicy, Settings
from cloudmfa.errors import (
    Forbidden,
    InvalidToken,
    MfaEnrollmentRequired,
    ReauthenticationRequired,
)
from cloudmfa.flows.deps import Principals
from cloudmfa.flows.sessions import is_revoked
from cloudmfa.security.tokens import AccessClaims
from cloudmfa.store import sessions as session_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.users import User

# RFC 8176 amr values the rules below read from the (signed) access token.
MULTI_FACTOR_AMR = "mfa"  # a second factor was verified, or a remembered device stood in for it
REMEMBERED_DEVICE_AMR = "swk"  # the second factor was skipped for a remembered device


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    claims: AccessClaims
    active_factor_count: int
    confined: bool  # the MFA policy limits this session to /me, its first factor and logout

    @property
    def session_id(self) -> str:
        return self.claims.sid

    @property
    def verified_second_factor(self) -> bool:
        """Whether a second factor was verified in this very session. A remembered device
        makes a session multi-factor (`mfa`) without verifying any factor in it (`swk`)."""
        amr = self.claims.amr
        return MULTI_FACTOR_AMR in amr and REMEMBERED_DEVICE_AMR not in amr

    def require_unconfined(self) -> None:
        if self.confined:
            raise self._second_factor_missing()

    def require_admin(self) -> None:
        """Administration needs the role and, whatever the MFA policy, a session that verified
        a second factor (API.md "Administration")."""
        self.require_unconfined()
        if not self.user.is_admin:
            raise Forbidden("This needs the admin role.")
        if self.active_factor_count == 0 or not self.verified_second_factor:
            raise self._second_factor_missing()

    def _second_factor_missing(self) -> MfaEnrollmentRequired | ReauthenticationRequired:
        if self.active_factor_count == 0:
            return MfaEnrollmentRequired(
                "This account must set up a second factor before it can do this."
            )
        # Activating a factor does not upgrade the session that did it: only a sign-in with
        # the factor proves it.
        return ReauthenticationRequired("Sign in again with your second factor to do this.")


def enrollment_deadline(settings: Settings, user: User) -> datetime | None:
    """The end of the enrolment grace period, or None when there is none."""
    if settings.mfa_grace_days <= 0:
        return None
    return user.created_at + timedelta(days=settings.mfa_grace_days)


def _in_grace_period(settings: Settings, user: User, now: datetime) -> bool:
    deadline = enrollment_deadline(settings, user)
    return deadline is not None and now < deadline


def must_enroll(settings: Settings, user: User, active_factor_count: int, now: datetime) -> bool:
    """What a login response says: the account has no factor and the policy wants one now."""
    return (
        settings.mfa_policy is MfaPolicy.REQUIRED
        and active_factor_count == 0
        and not _in_grace_period(settings, user, now)
    )


def session_confined(settings: Settings, user: User, amr: Sequence[str], now: datetime) -> bool:
    """Under the `required` policy a session that did not prove a second factor is confined,
    whatever factors the account has by now (API.md "MFA policy")."""
    return (
        settings.mfa_policy is MfaPolicy.REQUIRED
        and MULTI_FACTOR_AMR not in amr
        and not _in_grace_period(settings, user, now)
    )


async def authenticate(svc: Principals, access_token: str) -> Principal:
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
        confined=session_confined(svc.settings, user, claims.amr, svc.clock.now()),
    )


def require_recent_sign_in(settings: Settings, now: datetime, principal: Principal) -> None:
    """The session was signed in within the step-up window (its token's `auth_time`): what
    enrolling a factor needs even where no second factor can be asked for yet (API.md
    "Step-up"), so an old or long-refreshed session cannot attach an attacker's factor."""
    signed_in_at = datetime.fromtimestamp(principal.claims.auth_time, UTC)
    if now - signed_in_at > timedelta(seconds=settings.reauth_window_s):
        raise ReauthenticationRequired("Sign in again to do this.")


async def require_recent_authentication(svc: Principals, principal: Principal) -> None:
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

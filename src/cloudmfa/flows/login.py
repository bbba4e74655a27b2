"""The login journey (API.md "Login"): password first, then, when the account has one, a
second factor (``flows/second_factor.py``). This module knows the order of the steps, not how
any factor works: the factor registry says which factors the account offers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudmfa import metrics
from cloudmfa.config import MfaPolicy
from cloudmfa.email_address import normalise_email
from cloudmfa.errors import AccountLocked, InvalidCredentials, RateLimited
from cloudmfa.flows import second_factor, throttling
from cloudmfa.flows.audit_log import record_separately
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import SecondFactors
from cloudmfa.flows.principal import enrollment_deadline, must_enroll
from cloudmfa.flows.sessions import TokenSet, open_session
from cloudmfa.security.tokens import hash_opaque_token
from cloudmfa.store import devices as device_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import record
from cloudmfa.store.factors import SignInAccount
from cloudmfa.store.users import User

# amr of a session whose second factor was a remembered device (RFC 8176 `swk`): it counts as
# multi-factor for sign-in, but never for step-up (the session is not `mfa_verified`).
REMEMBERED_DEVICE_AMR = ["pwd", "swk", "mfa"]


@dataclass(frozen=True, slots=True)
class Authenticated:
    tokens: TokenSet
    mfa_enrollment_required: bool = False
    mfa_enrollment_deadline: datetime | None = None


async def login_with_password(
    svc: SecondFactors,
    info: RequestInfo,
    email: str,
    password: str,
    *,
    device_token: str | None = None,
) -> Authenticated | second_factor.MfaRequired:
    email = normalise_email(email)
    try:
        await svc.throttle.reserve(email)
    except RateLimited as exc:
        metrics.password_checked("rate_limited")
        async with svc.reader.connect() as conn:
            known = await user_repo.get_by_email(conn, email)
        await throttling.record_rate_limited(svc, info, known.id if known else None, exc)
        raise
    account = await _check_password(svc, info, email, password)
    user = account.user
    # A correct password is not a failure, but it does not clear earlier ones either: only a
    # completed sign-in does (API.md "Throttling"). The attempt reserved above is given back
    # when the second step's attempt opens (one round trip), or cleared with the rest when the
    # sign-in completes here.
    try:
        offer = svc.factor_types.second_step_of(account)
        if offer.factors:
            if device_token and await _remembered(svc, user.id, device_token):
                result = await _open(svc, info, user, REMEMBERED_DEVICE_AMR, active_factors=1)
                await svc.throttle.reset(email)
                metrics.password_checked("remembered_device")
                metrics.signed_in("remembered_device")
                return result
            required = await second_factor.begin(svc, user_id=user.id, email=email, offer=offer)
            metrics.password_checked("second_factor_required")
            return required
        result = await _open(svc, info, user, ["pwd"], active_factors=0)
        metrics.password_checked("signed_in")
        metrics.signed_in("none")
    except BaseException:
        await svc.throttle.release(email)  # the password was right all the same
        raise
    await svc.throttle.reset(email)
    return result


async def _check_password(
    svc: SecondFactors, info: RequestInfo, email: str, password: str
) -> SignInAccount:
    # The account with its factors, read before the hash: one round trip where reading the
    # factors after it took two more (bench/README.md, "Where the password step's time goes").
    async with svc.reader.connect() as conn:
        account = await svc.factor_types.account_for_sign_in(conn, email)
    if account is None:
        # Same answer, in about the same time, as a wrong password.
        await svc.hashing.verify_dummy(password)
        await _record_failure(svc, info, None, "unknown_account")
        raise InvalidCredentials("The email or password is wrong.")
    user = account.user
    result = await svc.hashing.verify(user.password_hash, password)
    if not result.ok:
        await _record_failure(svc, info, user.id, "wrong_password")
        raise InvalidCredentials("The email or password is wrong.")
    if user.locked_at is not None:
        # Only told to someone who knows the password, so it reveals nothing to a guesser.
        await _record_failure(svc, info, user.id, "account_locked")
        raise AccountLocked("This account is locked; contact an administrator.")
    if result.new_hash:
        async with svc.engine.begin() as conn:
            await user_repo.set_password_hash(conn, user.id, result.new_hash, svc.clock.now())
    return account


async def _remembered(svc: SecondFactors, user_id: str, device_token: str) -> bool:
    if svc.settings.remember_device_days <= 0:
        return False
    async with svc.engine.begin() as conn:
        device_id = await device_repo.use_device(
            conn, user_id=user_id, token_hash=hash_opaque_token(device_token), now=svc.clock.now()
        )
    return device_id is not None


async def _open(
    svc: SecondFactors, info: RequestInfo, user: User, amr: list[str], *, active_factors: int
) -> Authenticated:
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        tokens = await open_session(
            conn, svc, user_id=user.id, info=info, amr=amr, acr=None, mfa_verified=False, now=now
        )
        await record(
            conn,
            now,
            info.event(
                "login.succeeded", subject_id=user.id, amr=amr, session_id=tokens.session_id
            ),
        )
    if active_factors:
        return Authenticated(tokens=tokens)
    if svc.settings.mfa_policy is not MfaPolicy.REQUIRED:
        return Authenticated(tokens=tokens)
    enroll = must_enroll(svc.settings, user, 0, now)
    return Authenticated(
        tokens=tokens,
        mfa_enrollment_required=enroll,
        mfa_enrollment_deadline=None if enroll else enrollment_deadline(svc.settings, user),
    )


async def _record_failure(
    svc: SecondFactors, info: RequestInfo, user_id: str | None, reason: str
) -> None:
    metrics.password_checked(reason)  # unknown_account, wrong_password, account_locked
    await record_separately(
        svc, info.event("login.failed", subject_id=user_id, outcome="failure", reason=reason)
    )

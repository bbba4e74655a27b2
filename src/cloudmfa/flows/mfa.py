"""The second step of login (API.md "Login"): an mfa_token, a challenge, a verification.

The mfa_token lives in the ephemeral store: 5 minutes, single use, bound to the user and to the
factors offered at the password step. Attempts are counted before a code is checked, so parallel
guesses can never exceed the limit, and the account-level throttle applies as well.

The token also keeps the offered factors as the password step read them, secrets still
encrypted, for the modules that can verify from such a snapshot (FactorModule): the verify step
then reads nothing from the database before its one write, whose claim re-checks the factor.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cloudmfa.errors import InvalidCode, MfaTokenExpired, RateLimited
from cloudmfa.factors.base import Challenge, FactorOption, Proof, StoredFactor
from cloudmfa.factors.registry import LoginFactors
from cloudmfa.flows import throttling
from cloudmfa.flows.audit_log import record_separately
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.sessions import TokenSet, new_session, revoke_sessions, token_set
from cloudmfa.security.secretbox import SecretKeyError
from cloudmfa.security.tokens import hash_opaque_token, new_opaque_token
from cloudmfa.services import Services
from cloudmfa.store import devices as device_repo
from cloudmfa.store import factors as factor_repo
from cloudmfa.store.audit import record
from cloudmfa.store.sign_in import Completion, NewDevice, SignInUnit


@dataclass(frozen=True, slots=True)
class MfaRequired:
    mfa_token: str
    expires_in: int
    factors: list[FactorOption]


@dataclass(frozen=True, slots=True)
class MfaVerified:
    tokens: TokenSet
    device_token: str | None


@dataclass(frozen=True, slots=True)
class _Attempt:
    key: str
    user_id: str
    email: str
    factors: dict[str, str]  # factor id → type, as offered at the password step
    snapshots: dict[str, dict[str, Any]]  # factor id → StoredFactor.snapshot()


# The token, its tries and its lease share a hash tag, the token's hash in braces: one Redis
# Cluster slot, so that begin_use's script may touch all three.
def _token_key(token_hash: str) -> str:
    return f"mfa:{{{token_hash}}}"


def _tries_key(token_hash: str) -> str:
    return f"mfa_tries:{{{token_hash}}}"


def _lease_key(token_hash: str) -> str:
    return f"mfa_busy:{{{token_hash}}}"


# How long one verification may hold its mfa_token. It is given back as soon as the request
# ends; this only bounds the wait after a worker died mid-request.
_VERIFICATION_LEASE_S = 10


async def begin(svc: Services, *, user_id: str, email: str, second: LoginFactors) -> MfaRequired:
    token, token_hash = new_opaque_token()
    state = {
        "uid": user_id,
        "email": email,
        "factors": {o.id: o.type for o in second.options},
        "snapshots": {f.id: f.snapshot() for f in second.snapshots},
    }
    ttl = svc.settings.mfa_token_ttl_s
    await svc.store.set(_token_key(token_hash), json.dumps(state), ttl)
    return MfaRequired(mfa_token=token, expires_in=ttl, factors=second.options)


def _expired() -> MfaTokenExpired:
    return MfaTokenExpired("This sign-in attempt has expired; start again with the password.")


def _attempt(token_hash: str, raw: str) -> _Attempt:
    state = json.loads(raw)
    snapshots = dict(state.get("snapshots", {}))  # none in a token from an older release
    return _Attempt(token_hash, state["uid"], state["email"], dict(state["factors"]), snapshots)


async def _load(svc: Services, mfa_token: str) -> _Attempt:
    token_hash = hash_opaque_token(mfa_token)
    raw = await svc.store.get(_token_key(token_hash))
    if raw is None:
        raise _expired()
    return _attempt(token_hash, raw)


async def _begin_verification(svc: Services, mfa_token: str) -> tuple[_Attempt, int]:
    """The attempt, held for this request alone, and which try at it this is (both in the
    same step). One verification at a time per mfa_token: a parallel one is refused before it
    spends anything, so of two valid proofs sent at once only one is used up."""
    token_hash = hash_opaque_token(mfa_token)
    raw, tries = await svc.store.begin_use(
        _token_key(token_hash),
        counter=_tries_key(token_hash),
        lease=_lease_key(token_hash),
        ttl_s=svc.settings.mfa_token_ttl_s,
        lease_s=_VERIFICATION_LEASE_S,
    )
    if raw is None:
        raise _expired()
    if tries == 0:
        raise MfaTokenExpired("This sign-in attempt is being completed by another request.")
    return _attempt(token_hash, raw), tries


async def challenge(svc: Services, info: RequestInfo, mfa_token: str, factor_id: str) -> Challenge:
    attempt = await _load(svc, mfa_token)
    factor_type = attempt.factors.get(factor_id)
    if factor_type is None:
        raise InvalidCode("That factor was not offered for this sign-in.")
    if factor_id in svc.factors.virtual:
        return Challenge(status=200, body={})
    module = svc.factors.module(factor_type)
    async with svc.engine.begin() as conn:
        factor = await factor_repo.get_factor(conn, factor_id, attempt.user_id)
        if module is None or factor is None or factor.status != "active":
            raise InvalidCode("That factor is no longer available.")
        result = await module.challenge(conn, svc.factor_env, factor)
        if result.status == 202:
            await record(
                conn,
                svc.clock.now(),
                info.event(
                    "mfa.challenge_sent",
                    subject_id=attempt.user_id,
                    factor_id=factor_id,
                    factor_type=factor_type,
                ),
            )
    return result


def session_amr(first: list[str], proof: Proof) -> list[str]:
    """The session's amr (RFC 8176): each method once, and `mfa` when two distinct factors
    were verified or a user-verified passkey was used."""
    methods = list(dict.fromkeys([*first, *proof.amr]))
    if len(methods) >= 2 or proof.user_verified:
        methods.append("mfa")
    return methods


async def verify(
    svc: Services,
    info: RequestInfo,
    *,
    mfa_token: str,
    factor_id: str,
    proof: dict[str, Any],
    remember_device: bool,
) -> MfaVerified:
    attempt, tries = await _begin_verification(svc, mfa_token)
    try:
        if tries > svc.settings.mfa_max_attempts:
            await svc.store.delete(_token_key(attempt.key))
            raise MfaTokenExpired("Too many wrong codes; start again with the password.")
        try:
            await svc.throttle.reserve(attempt.email)
        except RateLimited as exc:
            await throttling.record_rate_limited(svc, info, attempt.user_id, exc)
            raise
        try:
            # On success this also spends the token and gives back the lease.
            return await _verify_and_open_session(
                svc, info, attempt, factor_id, proof, remember_device
            )
        except InvalidCode:
            await _record_failure(svc, info, attempt, factor_id)
            if tries >= svc.settings.mfa_max_attempts:
                await svc.store.delete(_token_key(attempt.key))
            raise
        except MfaTokenExpired:
            await svc.throttle.release(attempt.email)  # lost a race, not a wrong code
            raise
    except BaseException:
        await svc.store.delete(_lease_key(attempt.key))
        raise


async def _verify_and_open_session(
    svc: Services,
    info: RequestInfo,
    attempt: _Attempt,
    factor_id: str,
    payload: dict[str, Any],
    remember_device: bool,
) -> MfaVerified:
    factor_type = attempt.factors.get(factor_id)
    if factor_type is None:
        raise InvalidCode("That factor was not offered for this sign-in.")
    now = svc.clock.now()
    async with svc.sign_ins.unit() as unit:
        proof = await _verify_factor(svc, unit, attempt, factor_id, factor_type, payload)
        amr = session_amr(["pwd"], proof)
        session = new_session(
            svc,
            user_id=attempt.user_id,
            info=info,
            amr=amr,
            acr="phr" if proof.phishing_resistant else None,
            mfa_verified=True,
            now=now,
        )
        refresh_token, refresh_hash = new_opaque_token()
        device_token, device = None, None
        if remember_device and svc.settings.remember_device_days > 0:
            device_token, device_hash = new_opaque_token()
            expires_at = now + timedelta(days=svc.settings.remember_device_days)
            device = NewDevice(str(uuid.uuid4()), device_hash, expires_at)
        events = [
            info.event(
                "mfa.succeeded",
                subject_id=attempt.user_id,
                factor_id=factor_id,
                factor_type=factor_type,
            ),
            info.event(
                "login.succeeded",
                subject_id=attempt.user_id,
                amr=amr,
                session_id=session.id,
                remembered_device=device is not None,
            ),
        ]
        if "rec" in proof.amr:
            events.append(info.event("recovery_code.used", subject_id=attempt.user_id))
        completion = Completion(proof.claim, session, refresh_hash, device, events)
        if not await unit.complete(completion):
            raise InvalidCode("The code is not valid.")  # spent a moment ago by another request
    # Spending the mfa_token completes the sign-in, which clears the account's failure count
    # and gives back the lease in the same round trip.
    spent = await svc.store.pop_and_delete(
        _token_key(attempt.key), svc.throttle.key_for(attempt.email), _lease_key(attempt.key)
    )
    if spent is None:  # the lease ran out and another verification took the token
        await _withdraw(svc, info, completion)
        raise MfaTokenExpired("This sign-in attempt has already been used.")
    return MfaVerified(tokens=token_set(svc, session, refresh_token), device_token=device_token)


async def _withdraw(svc: Services, info: RequestInfo, completion: Completion) -> None:
    """Undo a sign-in whose mfa_token another verification spent first (this one outlived its
    lease): one mfa_token hands out one session."""
    session = completion.session
    async with svc.engine.begin() as conn:
        await revoke_sessions(conn, svc, [session.id], reason="mfa_token_already_used")
        if completion.device is not None:
            await device_repo.delete_device(conn, completion.device.id, session.user_id)
        await record(
            conn,
            svc.clock.now(),
            info.event(
                "session.revoked",
                subject_id=session.user_id,
                session_id=session.id,
                reason="mfa_token_already_used",
            ),
        )


async def _verify_factor(
    svc: Services,
    unit: SignInUnit,
    attempt: _Attempt,
    factor_id: str,
    factor_type: str,
    payload: dict[str, Any],
) -> Proof:
    virtual = svc.factors.virtual.get(factor_id)
    if virtual is not None:
        return await virtual.verify(svc.factor_env, attempt.user_id, payload)
    module = svc.factors.module(factor_type)
    if module is None:
        raise InvalidCode("That factor is no longer available.")
    snapshot = attempt.snapshots.get(factor_id) if module.verifies_from_snapshot else None
    if snapshot is not None:
        try:
            return await module.verify(
                svc.factor_env, StoredFactor.from_snapshot(snapshot), payload
            )
        except SecretKeyError:
            pass  # its key left the ring since the password step: use the factor as it is now
    factor = await unit.factor(factor_id, attempt.user_id)
    if factor is None or factor.status != "active":
        raise InvalidCode("That factor is no longer available.")
    return await module.verify(svc.factor_env, factor, payload)


async def _record_failure(
    svc: Services, info: RequestInfo, attempt: _Attempt, factor_id: str
) -> None:
    await record_separately(
        svc,
        info.event(
            "mfa.failed",
            subject_id=attempt.user_id,
            outcome="failure",
            factor_id=factor_id,
            factor_type=attempt.factors.get(factor_id),
        ),
    )

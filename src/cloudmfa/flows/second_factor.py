"""The second step of login (API.md "Login"): a challenge when the factor needs one, then a
verification that opens the session.

This module knows the order of the steps and the per-attempt limits, not how any factor works:
the registry finds the factor type, which describes what to do (``Challenge``) and what a proof
proved (``Verified``); this flow delivers, writes and answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cloudmfa import metrics
from cloudmfa.delivery.outbox import binding_for_attempt
from cloudmfa.errors import (
    AccountLocked,
    DeliveryFailed,
    InvalidCode,
    MfaTokenExpired,
    RateLimited,
)
from cloudmfa.factors.base import (
    ChallengeOutcome,
    FlaggedProof,
    NothingToSend,
    OfferedFactor,
    ProofInput,
    SendMessage,
    StoredFactor,
    Verified,
    expect_proof,
)
from cloudmfa.factors.registry import SecondStepOffer
from cloudmfa.flows import send_limits, throttling
from cloudmfa.flows.audit_log import record_separately
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import SecondFactors
from cloudmfa.flows.sessions import TokenSet, new_session, revoke_sessions, token_set
from cloudmfa.security.secretbox import SecretKeyError
from cloudmfa.security.tokens import new_opaque_token
from cloudmfa.store import devices as device_repo
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import record
from cloudmfa.store.ids import time_ordered_id
from cloudmfa.store.login_attempts import AttemptRecord
from cloudmfa.store.sign_in import Completion, NewDevice

NOT_OFFERED = "That factor was not offered for this sign-in."
GONE = "That factor is no longer available."
LOCKED = "This account is locked; contact an administrator."
UNDELIVERED = "The code could not be delivered; ask for a new code or choose another factor."


@dataclass(frozen=True, slots=True)
class MfaRequired:
    mfa_token: str
    expires_in: int
    factors: list[OfferedFactor]


@dataclass(frozen=True, slots=True)
class MfaVerified:
    tokens: TokenSet
    device_token: str | None


async def begin(
    svc: SecondFactors, *, user_id: str, email: str, offer: SecondStepOffer
) -> MfaRequired:
    """The attempt the password step hands out for what the account offers."""
    token = await svc.attempts.open(
        user_id=user_id,
        email=email,
        offered={f.id: f.type for f in offer.factors},
        snapshots=offer.snapshots,
    )
    return MfaRequired(mfa_token=token, expires_in=svc.attempts.ttl_s, factors=offer.factors)


# --- challenge -------------------------------------------------------------------------------


async def challenge(
    svc: SecondFactors, info: RequestInfo, mfa_token: str, factor_id: str
) -> ChallengeOutcome:
    attempt = await svc.attempts.load(mfa_token)
    factor_type = attempt.offered.get(factor_id)
    if factor_type is None:
        raise InvalidCode(NOT_OFFERED)
    if svc.factor_types.backup_for(factor_id) is not None:
        return NothingToSend()  # the user holds the codes
    kind = svc.factor_types.get(factor_type)
    async with svc.reader.connect() as conn:
        found = await factor_repo.get_with_account(conn, factor_id, attempt.user_id)
    if found is None or found.account_locked:
        raise AccountLocked(LOCKED)  # sends nothing to a locked account
    factor = found.factor
    if kind is None or factor is None or factor.status != "active":
        raise InvalidCode(GONE)
    result = await kind.challenge(factor, attempt.as_seen_by_factor())
    if isinstance(result.outcome, SendMessage):
        # Kept before anything is sent: a code reaches the user only once it can be checked.
        await _within_send_limits(svc, info, attempt, factor, result.outcome, result.keep)
        await _send(svc, info, attempt, factor, result.outcome)
    elif result.keep is not None:
        await svc.attempts.keep(attempt.id, factor_id, result.keep)
    return result.outcome


async def _within_send_limits(
    svc: SecondFactors,
    info: RequestInfo,
    attempt: AttemptRecord,
    factor: StoredFactor,
    send: SendMessage,
    keep: Mapping[str, Any] | None,
) -> None:
    """API.md "Throttling": one message per factor per cooldown, the limits by destination and
    the SMS budgets (flows/send_limits.py), then a few per attempt, where what the challenge
    keeps (the new code) replaces the last only when it will be sent. Two steps of the shared
    store, for their keys live in different Redis Cluster slots. A request refused by the
    cooldown or a limit uses up none of the attempt's sends; one refused by the attempt's count
    gives back the units it took, and the user's last code stays the one that counts."""
    taken = await send_limits.take_send(
        svc, info, send.message, user_id=attempt.user_id, cooldown_for=factor.id
    )
    max_sends = svc.settings.mfa_max_sends
    if not await svc.attempts.count_send(attempt.id, factor.id, keep, max_sends=max_sends):
        await send_limits.give_back(svc, taken)
        raise RateLimited(
            "No more codes can be sent for this sign-in; start again with the password.",
            retry_after=svc.attempts.ttl_s,
            kind="attempt_sends",
        )


async def _send(
    svc: SecondFactors,
    info: RequestInfo,
    attempt: AttemptRecord,
    factor: StoredFactor,
    send: SendMessage,
) -> None:
    """Hand a factor's message to delivery, written with the event that records it (all or
    nothing). Asking for a code never resets the account's failure count."""
    event = info.event(
        "mfa.challenge_sent",
        subject_id=attempt.user_id,
        factor_id=factor.id,
        factor_type=factor.type,
        channel=send.message.channel,
    )
    message_id = await svc.outbox.submit_with_events(
        send.message,
        [event],
        user_id=attempt.user_id,
        binding=binding_for_attempt(attempt.id, factor.id),
    )
    await svc.outbox.dispatch(message_id)


# --- verify ----------------------------------------------------------------------------------


async def verify(
    svc: SecondFactors,
    info: RequestInfo,
    *,
    mfa_token: str,
    factor_id: str,
    proof: ProofInput,
    remember_device: bool,
) -> MfaVerified:
    max_tries = svc.settings.mfa_max_attempts
    held = await svc.attempts.begin_verification(mfa_token, max_tries=max_tries)
    attempt, tries = held.record, held.tries
    factor_type = attempt.offered.get(factor_id)  # a type the registry knows, or None
    try:
        if tries > max_tries:
            await svc.attempts.end(attempt)
            metrics.second_factor_checked(factor_type, "expired")
            raise MfaTokenExpired("Too many wrong codes; start again with the password.")
        if held.refused is not None:
            metrics.second_factor_checked(factor_type, "rate_limited")
            await throttling.record_rate_limited(svc, info, attempt.user_id, held.refused)
            raise held.refused
        try:
            # On success this also spends the attempt and gives back the lease.
            verified = await _verify_and_open_session(
                svc, info, attempt, factor_id, proof, remember_device
            )
        except InvalidCode as refused:
            metrics.second_factor_checked(factor_type, "failed")
            await _record_failure(svc, info, attempt, factor_id, refused)
            if tries >= max_tries:
                await svc.attempts.end(attempt)
            if await svc.outbox.failed_for(binding_for_attempt(attempt.id, factor_id)):
                # The wrong code may be a guess at one that never came: say so (API.md 502).
                raise DeliveryFailed(UNDELIVERED) from refused
            raise
        except MfaTokenExpired:
            metrics.second_factor_checked(factor_type, "expired")
            await svc.throttle.release(attempt.email)  # lost a race, not a wrong proof
            raise
        except AccountLocked:
            metrics.second_factor_checked(factor_type, "account_locked")
            await svc.throttle.release(attempt.email)  # not a wrong proof either
            await svc.attempts.end(attempt)  # locking ended it
            raise
        metrics.second_factor_checked(factor_type, "succeeded")
        metrics.signed_in(factor_type or "unknown")
        return verified
    except BaseException:
        await svc.attempts.release(attempt)
        raise


async def _verify_and_open_session(
    svc: SecondFactors,
    info: RequestInfo,
    attempt: AttemptRecord,
    factor_id: str,
    proof: ProofInput,
    remember_device: bool,
) -> MfaVerified:
    factor_type = attempt.offered.get(factor_id)
    if factor_type is None:
        raise InvalidCode(NOT_OFFERED)
    verified = await _check_proof(svc, attempt, factor_id, factor_type, proof)
    now = svc.clock.now()
    amr = session_amr(["pwd"], verified)
    session = new_session(
        svc,
        user_id=attempt.user_id,
        info=info,
        amr=amr,
        acr="phr" if verified.phishing_resistant else None,
        mfa_verified=True,
        now=now,
    )
    refresh_token, refresh_hash = new_opaque_token()
    device_token, device = None, None
    if remember_device and svc.settings.remember_device_days > 0:
        device_token, device_hash = new_opaque_token()
        expires_at = now + timedelta(days=svc.settings.remember_device_days)
        device = NewDevice(time_ordered_id(), device_hash, expires_at)
    user_id = attempt.user_id
    events = [
        info.event(
            "mfa.succeeded", subject_id=user_id, factor_id=factor_id, factor_type=factor_type
        ),
        info.event(
            "login.succeeded",
            subject_id=user_id,
            amr=amr,
            session_id=session.id,
            remembered_device=device is not None,
        ),
        *(info.event(name, subject_id=user_id) for name in verified.audit_events),
    ]
    completion = Completion(verified.claim, session, refresh_hash, device, events)
    if not await svc.sign_ins.complete(completion):
        await _refuse_locked_account(svc, info, user_id)
        raise InvalidCode("The code is not valid.")  # spent a moment ago by another request
    # Spending the attempt completes the sign-in, which clears the account's failure count
    # in the same step.
    if not await svc.attempts.complete(attempt, svc.throttle.key_for(attempt.email)):
        await _withdraw(svc, info, completion)
        raise MfaTokenExpired("This sign-in attempt has already been used.")
    return MfaVerified(tokens=token_set(svc, session, refresh_token), device_token=device_token)


async def _check_proof(
    svc: SecondFactors, attempt: AttemptRecord, factor_id: str, factor_type: str, proof: ProofInput
) -> Verified:
    backup = svc.factor_types.backup_for(factor_id)
    if backup is not None:
        code = expect_proof(proof, backup.proof)
        return await backup.verify(attempt.user_id, code, attempt.as_seen_by_factor())
    kind = svc.factor_types.get(factor_type)
    if kind is None:
        raise InvalidCode(GONE)
    expect_proof(proof, kind.proof)
    kept = await svc.attempts.kept(attempt.id, factor_id) if kind.uses_challenge else None
    seen = attempt.as_seen_by_factor(kept=kept)
    snapshot = attempt.snapshot_of(factor_id) if kind.verifies_from_snapshot else None
    if snapshot is not None:
        try:
            return await kind.verify(snapshot, proof, seen)
        except SecretKeyError:
            pass  # its key left the ring since the password step: use the factor as it is now
    async with svc.reader.connect() as conn:
        factor = await factor_repo.get_factor(conn, factor_id, attempt.user_id)
    if factor is None or factor.status != "active":
        raise InvalidCode(GONE)
    return await kind.verify(factor, proof, seen)


def session_amr(first: list[str], verified: Verified) -> list[str]:
    """The session's amr (RFC 8176): each method once, and `mfa` when two distinct factors
    were verified or a user-verified passkey was used."""
    methods = list(dict.fromkeys([*first, *verified.amr]))
    if len(methods) >= 2 or verified.user_verified:
        methods.append("mfa")
    return methods


async def _refuse_locked_account(svc: SecondFactors, info: RequestInfo, user_id: str) -> None:
    """A claim also fails for a locked account (store/claims.py): then say so, having spent
    nothing (API.md "Administration": locking ends pending sign-ins)."""
    async with svc.reader.connect() as conn:
        user = await user_repo.get_by_id(conn, user_id)
    if user is None or user.locked_at is not None:
        await record_separately(
            svc,
            info.event(
                "login.failed", subject_id=user_id, outcome="failure", reason="account_locked"
            ),
        )
        raise AccountLocked(LOCKED)


async def _withdraw(svc: SecondFactors, info: RequestInfo, completion: Completion) -> None:
    """Undo a sign-in whose attempt another verification spent first (this one outlived its
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


async def _record_failure(
    svc: SecondFactors,
    info: RequestInfo,
    attempt: AttemptRecord,
    factor_id: str,
    refused: InvalidCode,
) -> None:
    events = [
        info.event(
            "mfa.failed",
            subject_id=attempt.user_id,
            outcome="failure",
            factor_id=factor_id,
            factor_type=attempt.offered.get(factor_id),
        )
    ]
    if isinstance(refused, FlaggedProof):  # e.g. webauthn.clone_detected
        events.append(
            info.event(
                refused.event, subject_id=attempt.user_id, outcome="failure", **refused.details
            )
        )
    await record_separately(svc, *events)

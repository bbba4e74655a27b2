"""Passwordless sign-in (API.md "Passwordless login with a passkey"): options with a fresh
challenge, then a credential that names its own account.

This flow knows the order of the steps and the rules every sign-in follows (locked accounts,
the account's failure count, the audit trail, one atomic write); the factor type that can sign
in alone (``factors/base.py`` ``PasswordlessFactor``) checks the proof.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloudmfa.errors import AccountLocked, InvalidCode, RateLimited, ValidationFailed
from cloudmfa.factors.base import CredentialProof, FlaggedProof, PasswordlessFactor, Verified
from cloudmfa.flows import throttling
from cloudmfa.flows.audit_log import record_separately
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import PasskeySignIns
from cloudmfa.flows.second_factor import LOCKED, session_amr
from cloudmfa.flows.sessions import TokenSet, new_session, token_set
from cloudmfa.security.tokens import hash_opaque_token, new_opaque_token
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.sign_in import Completion
from cloudmfa.store.users import User

# As long as the browser is told to wait (factors/webauthn/relying_party.py), and a little more:
# an autofill prompt may sit on the page a while before the user picks a passkey.
CHALLENGE_TTL_S = 330
EXPIRED = "This passkey challenge has expired or was used; ask for new options."
UNKNOWN = "The credential does not verify."


@dataclass(frozen=True, slots=True)
class PasskeyOptions:
    challenge_id: str
    public_key: dict[str, Any]


def _key(challenge_id: str) -> str:
    # Only the hash of the id is stored, as for every other token.
    return f"passkey_challenge:{hash_opaque_token(challenge_id)}"


def _passwordless(svc: PasskeySignIns) -> PasswordlessFactor:
    kind = svc.factor_types.passwordless
    if kind is None:
        raise ValidationFailed("Passkeys are not offered here.")
    return kind


async def options(svc: PasskeySignIns) -> PasskeyOptions:
    kind = _passwordless(svc)
    challenge = await kind.passwordless_challenge()
    assert challenge.keep is not None and hasattr(challenge.outcome, "options")
    challenge_id, _ = new_opaque_token()
    await svc.ephemeral.set(_key(challenge_id), json.dumps(challenge.keep), CHALLENGE_TTL_S)
    return PasskeyOptions(challenge_id, dict(challenge.outcome.options))


async def verify(
    svc: PasskeySignIns, info: RequestInfo, challenge_id: str, proof: CredentialProof
) -> TokenSet:
    kind = _passwordless(svc)
    # Single use whatever happens next: taken out of the store before anything is checked.
    raw = await svc.ephemeral.pop(_key(challenge_id))
    if raw is None:
        raise InvalidCode(EXPIRED)
    kept = json.loads(raw)
    lookup_key = kind.lookup_key_of(proof)
    async with svc.reader.connect() as conn:
        factor = await factor_repo.get_by_lookup_key(conn, kind.type, lookup_key)
        user = await user_repo.get_by_id(conn, factor.user_id) if factor else None
    if factor is None or user is None or factor.status != "active":
        await _record_failure(svc, info, None, "unknown_credential")
        raise InvalidCode(UNKNOWN)
    try:
        await svc.throttle.reserve(user.email)  # a failure counts like a wrong password
    except RateLimited as exc:
        await throttling.record_rate_limited(svc, info, user.id, exc)
        raise
    try:
        verified = await kind.verify_passwordless(factor, proof, kept)
    except InvalidCode as refused:
        await _record_failure(svc, info, user.id, "invalid_credential", refused)
        raise  # the reserved attempt stays counted: a failure
    except BaseException:
        await svc.throttle.release(user.email)
        raise
    if user.locked_at is not None:
        # Said only to the holder of the passkey, as a lock is said only to someone who knows
        # the password: a credential id alone learns nothing.
        await svc.throttle.release(user.email)
        await _record_failure(svc, info, user.id, "account_locked")
        raise AccountLocked(LOCKED)
    try:
        tokens = await _open_session(svc, info, user, factor.id, verified)
    except BaseException:
        await svc.throttle.release(user.email)
        raise
    await svc.throttle.reset(user.email)  # a completed sign-in clears the count
    return tokens


async def _open_session(
    svc: PasskeySignIns, info: RequestInfo, user: User, factor_id: str, verified: Verified
) -> TokenSet:
    now = svc.clock.now()
    amr = session_amr([], verified)  # ["hwk", "user", "mfa"]
    session = new_session(
        svc,
        user_id=user.id,
        info=info,
        amr=amr,
        acr="phr" if verified.phishing_resistant else None,
        mfa_verified=verified.user_verified,
        now=now,
    )
    refresh_token, refresh_hash = new_opaque_token()
    events = [
        info.event("mfa.succeeded", subject_id=user.id, factor_id=factor_id, passwordless=True),
        info.event(
            "login.succeeded", subject_id=user.id, amr=amr, session_id=session.id, passkey=True
        ),
    ]
    completion = Completion(verified.claim, session, refresh_hash, None, events)
    if not await svc.sign_ins.complete(completion):
        # The claim matched nothing: the account was locked meanwhile, the factor removed,
        # or its signature count taken by a parallel sign-in.
        async with svc.reader.connect() as conn:
            now_user = await user_repo.get_by_id(conn, user.id)
        if now_user is None or now_user.locked_at is not None:
            raise AccountLocked(LOCKED)
        raise InvalidCode(UNKNOWN)
    return token_set(svc, session, refresh_token)


async def _record_failure(
    svc: PasskeySignIns,
    info: RequestInfo,
    user_id: str | None,
    reason: str,
    refused: InvalidCode | None = None,
) -> None:
    events = [
        info.event(
            "login.failed", subject_id=user_id, outcome="failure", reason=reason, passkey=True
        )
    ]
    if isinstance(refused, FlaggedProof):  # e.g. webauthn.clone_detected
        events.append(
            info.event(refused.event, subject_id=user_id, outcome="failure", **refused.details)
        )
    await record_separately(svc, *events)

"""A forgotten password (API.md "Forgotten password"): a single-use link by email, then a new
password. It never touches second factors: the next login asks for one as before.

- No enumeration: a request answers the same whether the address has an account or not, and
  the edge runs this flow only once the answer has gone (api/auth.py), so the answer's time
  says nothing either. The flow takes the same steps on both paths as far as it can (a read of
  the account, a unit of the address's hourly message limit, one transaction with an audit
  event); only an existing, unlocked account is sent a link.
- The token (256 random bits) is kept only as its SHA-256, in the shared short-lived store, for
  ``CLOUDMFA_PASSWORD_RESET_TTL_S`` (30 minutes). It is bound to the password it resets: it
  keeps a digest of the password hash at the time it was issued, so once the password changes
  (through this or any other way) every reset link issued before is dead.
- Confirming takes the token in one atomic step (GETDEL), only once the new password has been
  checked against the policy and hashed: a weak password answers 422 and the link still works.
- A reset revokes every session and forgets every remembered device, then tells the account's
  address (flows/notifications.py).
- Reset emails count against the destination's hourly limit (flows/send_limits.py). Past it
  the answer is still 202 (a 429 would tell which addresses have accounts); the refusal is in
  the audit trail.
"""

from __future__ import annotations

import hashlib
import json

from cloudmfa.delivery.templates import password_reset
from cloudmfa.email_address import normalise_email
from cloudmfa.errors import InvalidToken, RateLimited
from cloudmfa.flows import notifications, send_limits
from cloudmfa.flows.audit_log import record_separately
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import Accounts
from cloudmfa.flows.sessions import revoke_all_for_user
from cloudmfa.security.tokens import hash_opaque_token, new_opaque_token
from cloudmfa.store import devices as device_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import record

INVALID = "This reset link is not valid any more; ask for a new one."


def _token_key(token_hash: str) -> str:
    return f"pwreset:{token_hash}"


def _password_digest(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()


async def request_reset(svc: Accounts, info: RequestInfo, email: str) -> None:
    email = normalise_email(email)
    async with svc.reader.connect() as conn:
        user = await user_repo.get_by_email(conn, email)
    token, token_hash = new_opaque_token()
    ttl = svc.settings.password_reset_ttl_s
    link = f"{svc.settings.public_url}/reset-password?token={token}"
    message = password_reset(to=email, service=svc.settings.issuer, link=link, minutes=ttl // 60)
    try:
        # Taken for unknown addresses too: the same step on both paths.
        await send_limits.take_send(svc, info, message, user_id=user.id if user else None)
    except RateLimited:
        return  # audited; the answer stays 202
    if user is None or user.locked_at is not None:
        reason = "unknown_account" if user is None else "account_locked"
        await record_separately(
            svc,
            info.event(
                "password_reset.requested",
                subject_id=user.id if user else None,
                outcome="failure",
                reason=reason,
            ),
        )
        return
    kept = {
        "user_id": user.id,
        "password_digest": _password_digest(user.password_hash),
        # Checked against the service's clock; the store's own expiry only clears it away.
        "expires": svc.clock.now().timestamp() + ttl,
    }
    await svc.ephemeral.set(_token_key(token_hash), json.dumps(kept), ttl)
    async with svc.engine.begin() as conn:
        message_id = await svc.outbox.submit(conn, message, user_id=user.id)
        await record(
            conn, svc.clock.now(), info.event("password_reset.requested", subject_id=user.id)
        )
    await svc.outbox.dispatch(message_id)


async def confirm_reset(svc: Accounts, info: RequestInfo, token: str, new_password: str) -> None:
    key = _token_key(hash_opaque_token(token))
    raw = await svc.ephemeral.get(key)
    if raw is None:
        raise InvalidToken(INVALID)
    kept = json.loads(raw)
    if svc.clock.now().timestamp() >= float(kept["expires"]):
        await svc.ephemeral.delete(key)
        raise InvalidToken(INVALID)
    async with svc.reader.connect() as conn:
        user = await user_repo.get_by_id(conn, kept["user_id"])
    if user is None or _password_digest(user.password_hash) != kept["password_digest"]:
        await svc.ephemeral.delete(key)
        raise InvalidToken(INVALID)
    svc.policy.check(new_password, email=user.email)  # 422: the link still works
    new_hash = await svc.hashing.hash(new_password)
    if await svc.ephemeral.pop(key) is None:
        raise InvalidToken(INVALID)  # spent by a request that came first
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        await user_repo.lock_for_update(conn, user.id)
        current = await user_repo.get_by_id(conn, user.id)
        if current is None or _password_digest(current.password_hash) != kept["password_digest"]:
            raise InvalidToken(INVALID)  # the password changed since the link was sent
        await user_repo.set_password_hash(conn, user.id, new_hash, now)
        revoked = await revoke_all_for_user(conn, svc, user.id, reason="password_reset")
        forgotten = await device_repo.forget_all(conn, user.id)
        await record(
            conn,
            now,
            info.event(
                "password.reset",
                subject_id=user.id,
                sessions_revoked=len(revoked),
                devices_forgotten=forgotten,
            ),
        )
        notice = await notifications.notify(
            conn, svc, to=user.email, kind="password_reset", user_id=user.id
        )
    await svc.outbox.dispatch(notice)

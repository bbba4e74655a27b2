"""Sessions: opening one with a token set, refreshing it, ending it (API.md "Tokens")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudmfa.errors import InvalidToken
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import Sessions
from cloudmfa.security.tokens import hash_opaque_token, new_opaque_token
from cloudmfa.services import revocation_key
from cloudmfa.store import sessions as session_repo
from cloudmfa.store import users as user_repo
from cloudmfa.store.audit import record
from cloudmfa.store.ids import time_ordered_id
from cloudmfa.store.sessions import Session


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    expires_in: int
    refresh_token: str
    session_id: str
    token_type: str = "Bearer"  # noqa: S105 (a scheme name, not a secret)


def new_session(
    svc: Sessions,
    *,
    user_id: str,
    info: RequestInfo,
    amr: list[str],
    acr: str | None,
    mfa_verified: bool,
    now: datetime,
) -> Session:
    return Session(
        id=time_ordered_id(),
        user_id=user_id,
        created_at=now,
        auth_time=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=svc.settings.session_max_hours),
        amr=tuple(amr),
        acr=acr,
        mfa_verified=mfa_verified,
        ip=info.ip,
        user_agent=info.clipped_user_agent(),
        revoked_at=None,
    )


async def open_session(
    conn: AsyncConnection,
    svc: Sessions,
    *,
    user_id: str,
    info: RequestInfo,
    amr: list[str],
    acr: str | None,
    mfa_verified: bool,
    now: datetime,
) -> TokenSet:
    """Create a session and its first token set, inside the caller's transaction."""
    session = new_session(
        svc, user_id=user_id, info=info, amr=amr, acr=acr, mfa_verified=mfa_verified, now=now
    )
    await session_repo.insert_session(conn, session)
    return await _issue_tokens(conn, svc, session, now)


async def _issue_tokens(
    conn: AsyncConnection, svc: Sessions, session: Session, now: datetime
) -> TokenSet:
    refresh_token, refresh_hash = new_opaque_token()
    await session_repo.insert_refresh_token(
        conn, token_hash=refresh_hash, session_id=session.id, now=now
    )
    return token_set(svc, session, refresh_token)


def token_set(svc: Sessions, session: Session, refresh_token: str) -> TokenSet:
    """The answer to a sign-in or refresh: a fresh access token beside the refresh token."""
    access_token = svc.tokens.issue(
        user_id=session.user_id,
        session_id=session.id,
        auth_time=session.auth_time,
        amr=list(session.amr),
        acr=session.acr,
    )
    return TokenSet(
        access_token=access_token,
        expires_in=svc.tokens.ttl_s,
        refresh_token=refresh_token,
        session_id=session.id,
    )


def _session_usable(svc: Sessions, session: Session, now: datetime) -> bool:
    idle_limit = timedelta(minutes=svc.settings.session_idle_minutes)
    return (
        session.revoked_at is None
        and now < session.expires_at
        and now - session.last_seen_at <= idle_limit
    )


async def refresh(svc: Sessions, info: RequestInfo, refresh_token: str) -> TokenSet:
    """Rotate a refresh token. A token presented twice revokes its whole session."""
    token_hash = hash_opaque_token(refresh_token)
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        session_id = await session_repo.consume_refresh_token(conn, token_hash, now)
        if session_id is not None:
            session = await session_repo.get_session(conn, session_id)
            user = await user_repo.get_by_id(conn, session.user_id) if session else None
            if session and user and user.locked_at is None and _session_usable(svc, session, now):
                await session_repo.touch(conn, session.id, now)
                return await _issue_tokens(conn, svc, session, now)
        else:
            reused_session = await session_repo.session_of_used_token(conn, token_hash)
            if reused_session is not None:
                session = await session_repo.get_session(conn, reused_session)
                await revoke_sessions(conn, svc, [reused_session], reason="refresh_token_reuse")
                owner = session.user_id if session else None
                await record(
                    conn,
                    now,
                    info.event(
                        "token.reuse_detected",
                        subject_id=owner,
                        outcome="failure",
                        session_id=reused_session,
                    ),
                )
    raise InvalidToken("The refresh token is not valid.")


async def end_by_refresh_token(svc: Sessions, info: RequestInfo, refresh_token: str) -> None:
    """Log out the session a refresh token belongs to: how a browser session, which holds no
    access token in a cookie, logs out (API.md "Browser sessions")."""
    async with svc.engine.begin() as conn:
        session_id = await session_repo.session_of_token(conn, hash_opaque_token(refresh_token))
        session = await session_repo.get_session(conn, session_id) if session_id else None
        if session is None:
            raise InvalidToken("The refresh token is not valid.")
        if await revoke_sessions(conn, svc, [session.id], reason="logout"):
            await record(
                conn,
                svc.clock.now(),
                info.event(
                    "session.revoked",
                    subject_id=session.user_id,
                    session_id=session.id,
                    reason="logout",
                ),
            )


async def revoke_sessions(
    conn: AsyncConnection, svc: Sessions, session_ids: list[str], *, reason: str
) -> list[str]:
    """Revoke sessions in the caller's transaction and refuse their access tokens at once.

    The revocation reaches the shared store before the transaction commits: should the commit
    fail, the access tokens are refused a little early, never accepted a little late.
    """
    revoked = await session_repo.revoke(conn, session_ids, now=svc.clock.now(), reason=reason)
    for sid in revoked:
        await svc.ephemeral.set(revocation_key(sid), "1", svc.revocation_ttl_s)
    return revoked


async def revoke_all_for_user(
    conn: AsyncConnection,
    svc: Sessions,
    user_id: str,
    *,
    reason: str,
    except_session: str | None = None,
) -> list[str]:
    ids = await session_repo.live_session_ids(
        conn, user_id, svc.clock.now(), except_id=except_session
    )
    return await revoke_sessions(conn, svc, ids, reason=reason)


async def is_revoked(svc: Sessions, session_id: str) -> bool:
    return await svc.ephemeral.exists_any(revocation_key(session_id))

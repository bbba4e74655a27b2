"""What a signed-in user can see and do about their own sessions and history."""

from __future__ import annotations

from typing import Any

from cloudmfa.errors import NotFound
from cloudmfa.flows.context import RequestInfo
from cloudmfa.flows.deps import Sessions
from cloudmfa.flows.principal import Principal
from cloudmfa.flows.sessions import revoke_sessions
from cloudmfa.store import audit as audit_repo
from cloudmfa.store import sessions as session_repo
from cloudmfa.store.audit import record
from cloudmfa.store.sessions import Session


async def list_sessions(svc: Sessions, principal: Principal) -> list[Session]:
    async with svc.reader.connect() as conn:
        return await session_repo.list_live_sessions(conn, principal.user.id, svc.clock.now())


async def end_session(
    svc: Sessions, principal: Principal, info: RequestInfo, session_id: str, *, reason: str
) -> None:
    """End one of the caller's own sessions (logout is the caller's current one)."""
    now = svc.clock.now()
    async with svc.engine.begin() as conn:
        session = await session_repo.get_session(conn, session_id)
        if session is None or session.user_id != principal.user.id:
            raise NotFound("No such session.")
        revoked = await revoke_sessions(conn, svc, [session_id], reason=reason)
        if revoked:
            await record(
                conn,
                now,
                info.event(
                    "session.revoked",
                    subject_id=principal.user.id,
                    session_id=session_id,
                    reason=reason,
                ),
            )


async def list_own_events(
    svc: Sessions, principal: Principal, *, before_seq: int | None, limit: int
) -> list[dict[str, Any]]:
    """The user's audit events, each with an `actor` role; another actor is named only so."""
    user_id = principal.user.id
    async with svc.reader.connect() as conn:
        rows = await audit_repo.list_events(
            conn, user_id=user_id, before_seq=before_seq, limit=limit
        )
    return [_as_seen_by(user_id, row) for row in rows]


def _as_seen_by(user_id: str, event: dict[str, Any]) -> dict[str, Any]:
    if event["actor_id"] == user_id:
        return {**event, "actor": {"role": "user"}}
    # Someone else caused it: an administrator, through the API or the command line. The user
    # learns that, never who, from where or with what (API.md "Administration").
    return {**event, "actor": {"role": "admin"}, "actor_id": None, "ip": None, "user_agent": None}

"""Helpers shared by the API tests: problem and token assertions, an account with TOTP."""

from __future__ import annotations

import contextlib
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp

from cloudmfa.flows.accounts import create_admin
from conftest import PASSWORD, Api, bearer

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
AUDIT_EVENT_KEYS = {
    "id",
    "at",
    "type",
    "actor_id",
    "subject_id",
    "ip",
    "user_agent",
    "outcome",
    "details",
}
TOKEN_KEYS = {"status", "access_token", "token_type", "expires_in", "refresh_token", "session_id"}


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with the given status and stable code; returns its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert PROBLEM_KEYS <= set(body), body
    assert body["status"] == status
    assert body["code"] == code
    return dict(body)


def assert_authenticated(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert TOKEN_KEYS <= set(body), body
    assert body["status"] == "authenticated"
    assert body["token_type"] == "Bearer"
    return dict(body)


def claims(access_token: str) -> dict[str, Any]:
    """The access token's claims, unverified (the token tests verify signatures)."""
    return dict(jwt.decode(access_token, options={"verify_signature": False}))


@dataclass
class MfaUser:
    id: str
    email: str
    factor_id: str
    secret: str
    recovery_codes: list[str]

    def code(self, api: Api, offset_steps: int = 0) -> str:
        """What the authenticator app shows at the app's (frozen) time."""
        return pyotp.TOTP(self.secret).at(api.clock.now(), counter_offset=offset_steps)

    def next_code(self, api: Api) -> str:
        """Move to the next time step (each is accepted once per factor) and read the app."""
        api.clock.advance(seconds=30)
        return self.code(api)


async def mfa_user(api: Api, tag: str = "mfa") -> MfaUser:
    """A new account with one active TOTP factor (activated from its password-only session);
    the code is computed from the enrolment secret, never read from the database."""
    user, headers = await api.signed_in(tag)
    return await add_totp(api, user["id"], user["email"], headers)


async def admin_user(api: Api, tag: str = "admin") -> MfaUser:
    """A new administrator (made the way `cloudmfa create-admin` makes one) with one active
    TOTP factor, activated from its first, password-only session."""
    email = api.new_email(tag)
    result = await create_admin(api.svc, email=email, password=PASSWORD)
    tokens = await api.login(email)
    return await add_totp(api, result.user.id, email, bearer(tokens["access_token"]))


async def add_totp(api: Api, user_id: str, email: str, headers: dict[str, str]) -> MfaUser:
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    factor = r.json()
    r = await api.client.post(
        f"/api/v1/me/factors/{factor['id']}/activate",
        json={"code": pyotp.TOTP(factor["secret"]).at(api.clock.now())},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return MfaUser(user_id, email, factor["id"], factor["secret"], r.json()["recovery_codes"])


async def verify(
    api: Api, mfa_token: str, factor_id: str, code: str, **extra: Any
) -> httpx.Response:
    """POST /auth/verify with a code (and any other field, such as `remember_device`)."""
    return await api.client.post(
        "/api/v1/auth/verify",
        json={"mfa_token": mfa_token, "factor_id": factor_id, "code": code, **extra},
    )


async def mfa_sign_in(api: Api, user: MfaUser, *, remember: bool = False) -> dict[str, Any]:
    """Password, then the TOTP code of the next time step: a session that verified a second
    factor. With `remember`, the answer also carries a device token."""
    start = await api.login(user.email)
    assert start["status"] == "mfa_required", start
    r = await verify(
        api, start["mfa_token"], user.factor_id, user.next_code(api), remember_device=remember
    )
    return assert_authenticated(r)


async def admin_session(api: Api, tag: str = "admin") -> tuple[MfaUser, dict[str, str]]:
    """A new administrator and the Authorization header of a fresh session that verified
    their second factor: what administration needs."""
    admin = await admin_user(api, tag)
    tokens = await mfa_sign_in(api, admin)
    return admin, bearer(tokens["access_token"])


def cloudmfa_command() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = Path(sys.executable).with_name("cloudmfa")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cloudmfa.cli"]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are chosen, so the
    system cannot hand one port out twice (picked one at a time, a Redis Cluster's 24 ports
    once most likely held a pair: a node's PING was reset, as another node's cluster bus does)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]

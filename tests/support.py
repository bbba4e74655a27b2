"""Helpers shared by the API tests: problem and token assertions, an account with TOTP."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp

from conftest import Api

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
    r = await api.client.post("/api/v1/me/factors", json={"type": "totp"}, headers=headers)
    assert r.status_code == 201, r.text
    factor = r.json()
    r = await api.client.post(
        f"/api/v1/me/factors/{factor['id']}/activate",
        json={"code": pyotp.TOTP(factor["secret"]).at(api.clock.now())},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return MfaUser(
        user["id"], user["email"], factor["id"], factor["secret"], r.json()["recovery_codes"]
    )


def cloudmfa_command() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = Path(sys.executable).with_name("cloudmfa")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cloudmfa.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

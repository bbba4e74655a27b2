"""The rules a session's own proof decides (API.md "MFA policy", "Tokens"), as pure functions:
no database, no app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudmfa.config import Settings
from cloudmfa.factors.base import Verified
from cloudmfa.flows.principal import enrollment_deadline, must_enroll, session_confined
from cloudmfa.flows.second_factor import session_amr
from cloudmfa.store.claims import UseFactor
from cloudmfa.store.users import User

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def user(created: datetime = NOW) -> User:
    return User(
        id="u1",
        email="ada@example.com",
        display_name=None,
        password_hash="x",
        roles=(),
        locked_at=None,
        created_at=created,
    )


def verified(*amr: str, user_verified: bool = False) -> Verified:
    return Verified(amr=amr, claim=UseFactor("f1"), user_verified=user_verified)


@pytest.mark.parametrize(
    ("proved", "expected"),
    [
        (verified("otp"), ["pwd", "otp", "mfa"]),
        (verified("rec"), ["pwd", "rec", "mfa"]),
        (verified("pwd"), ["pwd"]),  # the same method twice is one factor
        (verified("hwk", "user", user_verified=True), ["pwd", "hwk", "user", "mfa"]),
    ],
)
def test_session_amr_adds_mfa_for_two_distinct_methods(
    proved: Verified, expected: list[str]
) -> None:
    assert session_amr(["pwd"], proved) == expected


def test_a_user_verified_passkey_alone_is_multi_factor() -> None:
    assert session_amr([], verified("hwk", "user", user_verified=True)) == ["hwk", "user", "mfa"]
    assert session_amr([], verified("hwk")) == ["hwk"]


def test_confinement_follows_the_sessions_amr_not_the_account() -> None:
    required = settings(mfa_policy="required")
    assert session_confined(required, user(), ("pwd",), NOW)
    assert not session_confined(required, user(), ("pwd", "otp", "mfa"), NOW)
    assert not session_confined(required, user(), ("pwd", "swk", "mfa"), NOW)
    assert not session_confined(settings(mfa_policy="optional"), user(), ("pwd",), NOW)


def test_the_grace_period_frees_password_only_sessions_until_its_deadline() -> None:
    grace = settings(mfa_policy="required", mfa_grace_days=3)
    new = user(created=NOW - timedelta(days=1))
    assert enrollment_deadline(grace, new) == new.created_at + timedelta(days=3)
    assert not session_confined(grace, new, ("pwd",), NOW)
    assert not must_enroll(grace, new, 0, NOW)
    late = NOW + timedelta(days=2)
    assert session_confined(grace, new, ("pwd",), late)
    assert must_enroll(grace, new, 0, late)
    assert enrollment_deadline(settings(mfa_grace_days=0), new) is None


def test_an_account_with_a_factor_never_must_enrol() -> None:
    assert not must_enroll(settings(mfa_policy="required"), user(), 1, NOW)
    assert must_enroll(settings(mfa_policy="required"), user(), 0, NOW)

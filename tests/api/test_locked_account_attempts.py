"""Locking an account ends its pending sign-ins (API.md "Administration"): an mfa_token handed
out before the lock answers 403 account_locked at /auth/verify and spends nothing: no session,
no remembered device, no recovery code, no TOTP time step."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from cloudmfa.store import users as user_repo
from cloudmfa.store.models import factors, recovery_codes, remembered_devices, sessions
from conftest import ALL_BACKENDS, Api, bearer
from support import MfaUser, assert_authenticated, assert_problem, mfa_user, verify

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)


async def admin_headers(api: Api) -> dict[str, str]:
    """An administrator signed in a moment ago with a second factor (what locking needs)."""
    admin = await mfa_user(api, "lockadmin")
    async with api.svc.engine.begin() as conn:
        await user_repo.set_roles(conn, admin.id, ("admin",), api.clock.now())
    login = await api.login(admin.email)
    r = await verify(api, login["mfa_token"], admin.factor_id, admin.next_code(api))
    return bearer(assert_authenticated(r)["access_token"])


async def counts(api: Api, user: MfaUser) -> dict[str, Any]:
    async with api.svc.engine.connect() as conn:

        async def count(table: Any, *where: Any) -> int:
            stmt = select(func.count()).select_from(table).where(table.c.user_id == user.id, *where)
            return int((await conn.execute(stmt)).scalar_one())

        step = (
            await conn.execute(select(factors.c.counter).where(factors.c.id == user.factor_id))
        ).scalar_one()
        return {
            "sessions": await count(sessions),
            "devices": await count(remembered_devices),
            "unused_codes": await count(recovery_codes, recovery_codes.c.used_at.is_(None)),
            "totp_step": step,
        }


async def test_a_pending_sign_in_of_a_locked_account_answers_account_locked_and_spends_nothing(
    api: Api,
) -> None:
    user = await mfa_user(api, "lockedpending")
    headers = await admin_headers(api)
    first, second = await api.login(user.email), await api.login(user.email)
    before = await counts(api, user)

    r = await api.client.post(f"/api/v1/admin/users/{user.id}/lock", headers=headers)
    assert r.status_code == 204, r.text

    code = user.next_code(api)
    assert_problem(
        await verify(api, first["mfa_token"], user.factor_id, code, remember_device=True),
        403,
        "account_locked",
    )
    assert_problem(
        await verify(api, second["mfa_token"], "recovery", user.recovery_codes[0]),
        403,
        "account_locked",
    )
    assert await counts(api, user) == before
    # The attempt is over: after an unlock it does not come back.
    r = await api.client.post(f"/api/v1/admin/users/{user.id}/unlock", headers=headers)
    assert r.status_code == 204, r.text
    assert_problem(
        await verify(api, first["mfa_token"], user.factor_id, code), 401, "mfa_token_expired"
    )


async def test_a_locked_account_is_sent_no_challenge(api: Api) -> None:
    user = await mfa_user(api, "lockedchallenge")
    headers = await admin_headers(api)
    login = await api.login(user.email)
    assert (
        await api.client.post(f"/api/v1/admin/users/{user.id}/lock", headers=headers)
    ).status_code == 204

    r = await api.client.post(
        "/api/v1/auth/challenge",
        json={"mfa_token": login["mfa_token"], "factor_id": user.factor_id},
    )

    assert_problem(r, 403, "account_locked")

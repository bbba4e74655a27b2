"""How recovery codes are kept (NIST SP 800-63B-4 §3.1.2, as API.md asks): each under its own
salted argon2id hash, found by its first group so that a redemption checks one hash; codes
issued before that (bare SHA-256, no lookup) still redeem, once."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import insert, select, update

from cloudmfa.factors.recovery import codes
from cloudmfa.store.models import recovery_codes
from conftest import ALL_BACKENDS, Api
from support import assert_authenticated, assert_problem, mfa_user

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)


async def stored_rows(api: Api, user_id: str) -> list[Any]:
    async with api.svc.engine.connect() as conn:
        stmt = select(recovery_codes).where(recovery_codes.c.user_id == user_id)
        return list(await conn.execute(stmt))


async def verify(api: Api, mfa_token: str, code: str) -> Any:
    return await api.client.post(
        "/api/v1/auth/verify",
        json={"mfa_token": mfa_token, "factor_id": "recovery", "code": code},
    )


async def test_each_code_is_stored_under_its_own_salted_argon2id_hash(api: Api) -> None:
    user = await mfa_user(api, "salted")
    rows = await stored_rows(api, user.id)

    assert len(rows) == 10
    by_lookup = {row.lookup: row for row in rows}
    for code in user.recovery_codes:
        typed = codes.normalise(code)
        row = by_lookup[typed[:4]]
        assert row.code_hash.startswith("$argon2id$"), row.code_hash
        assert typed not in row.code_hash and typed[4:] not in row.code_hash
        assert row.code_hash != hashlib.sha256(typed.encode()).hexdigest()
        assert api.svc.hashing.verify_sync(row.code_hash, typed).ok
    salts = {row.code_hash.split("$")[4] for row in rows}
    assert len(salts) == 10, "every hash has a salt of its own"


async def test_a_right_lookup_with_a_wrong_secret_part_is_refused_and_spends_nothing(
    api: Api,
) -> None:
    user = await mfa_user(api, "lookup")
    code = codes.normalise(user.recovery_codes[0])
    forged = code[:4] + ("A" if code[4] != "A" else "B") + code[5:]
    token = (await api.login(user.email))["mfa_token"]

    assert_problem(await verify(api, token, forged), 401, "invalid_code")
    assert_authenticated(await verify(api, token, code))
    unused = [row for row in await stored_rows(api, user.id) if row.used_at is None]
    assert len(unused) == 9


async def test_a_code_issued_before_salting_still_signs_in_once(api: Api) -> None:
    user = await mfa_user(api, "legacy")
    old_code = "ABCD-EFGH-JKMN-PQRS"  # the old shape: four groups, kept as bare SHA-256
    async with api.svc.engine.begin() as conn:
        await conn.execute(
            update(recovery_codes)
            .where(recovery_codes.c.user_id == user.id)
            .values(used_at=api.clock.now())
        )
        await conn.execute(
            insert(recovery_codes).values(
                id=str(uuid.uuid4()),
                user_id=user.id,
                lookup=None,
                code_hash=hashlib.sha256(b"ABCDEFGHJKMNPQRS").hexdigest(),
                created_at=api.clock.now(),
            )
        )

    token = (await api.login(user.email))["mfa_token"]
    body = assert_authenticated(await verify(api, token, old_code.lower()))
    assert body["session_id"]
    token = (await api.login(user.email))["mfa_token"]
    assert_problem(await verify(api, token, old_code), 401, "invalid_code")

"""A real Redis Cluster (three masters of Debian's redis-server on 127.0.0.1, each with a
replica, started here and torn down after): the service reached through `redis+cluster://`
signs in with a second factor, spends an mfa_token once, keeps the per-IP limit, and clears keys
that live in other slots; then a master is killed in the middle of sign-ins and nothing single
use is spent twice (tests/sign_ins_under_failover.py says what may be lost and what must
hold)."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from redis.crc import key_slot

import support
from cloudmfa.delivery.base import Message
from cloudmfa.flows.send_limits import destination_key, sms_budget_key
from cloudmfa.security.throttle import account_tag
from cloudmfa.store.ephemeral import RedisStore, RedisUnavailable
from conftest import Api, PgDatabase, start_api
from conftest import test_settings as settings_for
from recording import new_phone, pass_cooldown, recording_api
from redis_servers import ClusterSetup, start_cluster
from sign_ins_under_failover import run_rounds, sessions_per_user
from support import mfa_user

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    setup = start_cluster(tmp_path_factory, replicas=1)  # a replica each: for the failover
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture(scope="module")
def cluster_url(cluster: ClusterSetup) -> str:
    return cluster.url


@pytest_asyncio.fixture(scope="module")
async def api(cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    db = tmp_path_factory.mktemp("db") / "cloudmfa.db"
    backend: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{db}",
        "redis_url": cluster_url,
        "redis_key_prefix": f"cloudmfa-test-{secrets.token_hex(4)}:",
    }
    app, api = await start_api(settings_for(backend))
    async with app.router.lifespan_context(app), api.client:
        yield api


async def test_a_second_factor_sign_in_spends_its_mfa_token_once(api: Api) -> None:
    user = await mfa_user(api, "cluster")
    token = (await api.login(user.email))["mfa_token"]
    body = {"mfa_token": token, "factor_id": user.factor_id}

    wrong = await api.client.post("/api/v1/auth/verify", json={**body, "code": "000000"})
    support.assert_problem(wrong, 401, "invalid_code")
    code = user.next_code(api)  # the activation spent the current step
    right = await api.client.post("/api/v1/auth/verify", json={**body, "code": code})
    support.assert_authenticated(right)
    again = await api.client.post("/api/v1/auth/verify", json={**body, "code": user.next_code(api)})
    support.assert_problem(again, 401, "mfa_token_expired")


async def test_the_per_ip_limit_holds_on_the_cluster(api: Api, cluster_url: str) -> None:
    settings = settings_for(
        {"database_url": api.svc.settings.database_url, "redis_url": cluster_url},
        redis_key_prefix=f"cloudmfa-test-{secrets.token_hex(4)}:",
        ip_rate_limit="3/minute",
    )
    app, limited = await start_api(settings)
    async with app.router.lifespan_context(app), limited.client:
        login = {"email": "nobody@example.com", "password": "wrong-password-123"}
        answers = [
            (await limited.client.post("/api/v1/auth/login", json=login)).status_code
            for _ in range(4)
        ]
    assert answers == [401, 401, 401, 429]


async def test_codes_by_sms_keep_their_limits_on_the_cluster(
    cluster_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The send's two scripts (the cooldown with the hourly counts, in the send limits' slot;
    the attempt's count of sends with the code it keeps, in the account's) and their
    give-back run on a Cluster: a CROSSSLOT reply would answer 500."""
    db = tmp_path_factory.mktemp("db") / "cloudmfa.db"
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"
    settings = settings_for(
        {"database_url": f"sqlite+aiosqlite:///{db}", "redis_url": cluster_url},
        redis_key_prefix=prefix,
        enabled_factors="totp,sms,recovery",
        mfa_max_sends=1,
        sms_country_hourly_budget=3,
    )
    async with recording_api(settings) as (sms_api, outbox):
        user, headers = await sms_api.signed_in("cluster-sms")
        phone = new_phone()
        r = await sms_api.client.post(
            "/api/v1/me/factors", json={"type": "sms", "phone": phone}, headers=headers
        )
        assert r.status_code == 201, r.text
        factor = r.json()
        r = await sms_api.client.post(
            f"/api/v1/me/factors/{factor['id']}/activate",
            json={"code": outbox.code_to(phone)},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        await pass_cooldown(sms_api, factor["id"])
        token = (await sms_api.login(user["email"]))["mfa_token"]
        body = {"mfa_token": token, "factor_id": factor["id"]}

        first = await sms_api.client.post("/api/v1/auth/challenge", json=body)
        again = await sms_api.client.post("/api/v1/auth/challenge", json=body)
        await pass_cooldown(sms_api, factor["id"])
        past_the_attempts = await sms_api.client.post("/api/v1/auth/challenge", json=body)

        assert first.status_code == 202, first.text
        support.assert_problem(again, 429, "rate_limited")  # the cooldown
        support.assert_problem(past_the_attempts, 429, "rate_limited")  # one send per attempt
        texted = Message("sms", phone, "", "")
        counts = [destination_key(texted), sms_budget_key("US"), sms_budget_key("*")]
        assert [await sms_api.svc.ephemeral.get(key) for key in counts] == ["2", "2", "2"]
        code = outbox.code_to(phone)
        verified = await sms_api.client.post("/api/v1/auth/verify", json={**body, "code": code})
        support.assert_authenticated(verified)


async def test_keys_in_other_slots_are_cleared_with_the_spent_one(cluster_url: str) -> None:
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"
    store = RedisStore(cluster_url, prefix=prefix)
    try:
        keys = ["token", "account", "lease", "another"]
        assert len({key_slot((prefix + key).encode()) for key in keys}) == len(keys)
        for key in keys:
            await store.set(key, key, 60)
        assert await store.pop_and_delete("token", "account", "lease") == "token"
        assert await store.exists_any("token", "account", "lease") is False
        assert await store.exists_any("token", "another") is True
        await store.delete(*keys)
        assert await store.exists_any(*keys) is False
    finally:
        await store.close()


async def test_a_cluster_client_reset_mid_command_is_unavailable_never_a_bug(
    cluster_url: str,
) -> None:
    """redis-py's Cluster client resets itself (its own aclose()) on CLUSTERDOWN during a
    failover, closing the connections other commands are writing on; those commands fail inside
    redis-py with an AttributeError. Here the reset is made directly, in the middle of bursts
    of commands, until one has been caught that way: it must come out as RedisUnavailable (503),
    and nothing else may escape."""
    prefix = f"cloudmfa-test-{secrets.token_hex(4)}:"
    store = RedisStore(cluster_url, prefix=prefix)
    outcomes: Counter[str] = Counter()

    async def one(i: int) -> None:
        try:
            await store.set(f"k:{{{i % 7}}}", "v", 60)
            outcomes["ok"] += 1
        except RedisUnavailable as exc:
            outcomes[f"unavailable {type(exc.__cause__).__name__}"] += 1

    try:
        for burst in range(400):
            commands = [asyncio.create_task(one(i)) for i in range(50)]
            for _ in range(burst % 6):  # the reset lands at different points of the writes
                await asyncio.sleep(0)
            await store.redis.aclose()
            await asyncio.gather(*commands)  # anything but RedisUnavailable fails the test
            if outcomes["unavailable AttributeError"]:
                break
        assert outcomes["unavailable AttributeError"] >= 1, outcomes
        await store.set("after", "v", 60)  # the client reconnects by itself
        assert await store.get("after") == "v"
    finally:
        await store.delete("after", *(f"k:{{{i}}}" for i in range(7)))
        await store.close()


async def test_killing_a_master_mid_sign_in_spends_no_proof_twice(cluster: ClusterSetup) -> None:
    db = PgDatabase()
    await db.create()
    settings = settings_for(
        {"database_url": db.url, "redis_url": cluster.url},
        redis_key_prefix=f"cloudmfa-test-{secrets.token_hex(4)}:",
        login_max_failures=100,  # every proof is spent twice: each loser counts as a failure
    )
    try:
        app, api = await start_api(settings)
        async with app.router.lifespan_context(app), api.client:
            users = [await mfa_user(api, f"cluster-failover-{i}") for i in range(4)]
            before = await sessions_per_user(db.url, [u.id for u in users])

            def fail_over() -> None:
                # The master of the first user's slot: their attempts, throttle and sessions'
                # revocations live there.
                cluster.kill_master_of("{" + account_tag(users[0].email) + "}")
                cluster.wait_for_state_ok()

            tally = await run_rounds(api, users, fail_over=fail_over)

            assert tally.rounds_during_failover >= 1, tally
            assert tally.answers["503 unavailable"] >= 1, tally.answers
            after = await sessions_per_user(db.url, [u.id for u in users])
            for user in users:
                signed_in = after[user.id] - before[user.id]
                assert tally.wins[user.id] <= signed_in <= tally.proofs_offered[user.id], tally
            assert tally.refresh_wins >= 1
            # The per-IP limit and revocations work on the cluster's new shape.
            _, headers = await api.signed_in("after-cluster-failover")
            assert (
                await api.client.post("/api/v1/auth/logout", headers=headers)
            ).status_code == 204
            refused = await api.client.get("/api/v1/me", headers=headers)
            support.assert_problem(refused, 401, "invalid_token")
    finally:
        await db.drop()

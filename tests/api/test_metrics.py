"""`/metrics` beyond the request counts (cloudmfa/metrics.py), on SQLite + the in-process store
and on PostgreSQL + Redis: the token that guards it, sign-ins and second-factor checks by factor
type and outcome, refusals by kind, the pools, and labels of the framework's own routes.

Counters are process-wide and other tests move them too, so each test reads them before and
after and asserts the difference.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from cloudmfa import metrics
from cloudmfa.security.passwords import PasswordHashing
from conftest import PASSWORD, Api, bearer, start_api
from conftest import test_settings as make_settings
from support import assert_problem, mfa_sign_in, mfa_user, verify

TOKEN = "scrape-" + "x" * 32


@pytest_asyncio.fixture(scope="module")
async def guarded(backend: dict[str, Any]) -> AsyncIterator[Api]:
    app, api = await start_api(make_settings(backend, metrics_token=TOKEN, login_max_failures=3))
    async with app.router.lifespan_context(app), api.client:
        yield api


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await api.client.get("/metrics", headers=bearer(TOKEN))
    assert r.status_code == 200, r.text
    return samples(r.text)


def value(figures: dict[Any, float], name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_token_guards_metrics(guarded: Api) -> None:
    assert_problem(await guarded.client.get("/metrics"), 401, "invalid_token")
    assert_problem(
        await guarded.client.get("/metrics", headers=bearer("not-" + TOKEN)), 401, "invalid_token"
    )
    assert_problem(
        await guarded.client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}),
        401,
        "invalid_token",
    )
    r = await guarded.client.get("/metrics", headers=bearer(TOKEN))
    assert r.status_code == 200
    assert "cloudmfa_http_requests_total" in r.text


def test_an_empty_token_leaves_metrics_open(backend: dict[str, Any]) -> None:
    assert make_settings(backend, metrics_token="").metrics_token is None


async def test_sign_ins_and_second_factor_checks_by_type_and_outcome(guarded: Api) -> None:
    api = guarded
    before = await scrape(api)
    plain, _ = await api.signed_in("plain")  # a password-only sign-in
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": plain["email"], "password": "wrong-" + PASSWORD}
    )
    assert_problem(r, 401, "invalid_credentials")
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": api.new_email("nobody"), "password": PASSWORD}
    )
    assert_problem(r, 401, "invalid_credentials")
    user = await mfa_user(api)  # its enrolment signed in with the password alone
    start = await api.login(user.email)
    assert_problem(
        await verify(api, start["mfa_token"], user.factor_id, "000000"), 401, "invalid_code"
    )
    await mfa_sign_in(api, user)
    start = await api.login(user.email)
    recovery = next(f["id"] for f in start["factors"] if f["type"] == "recovery")
    r = await verify(api, start["mfa_token"], recovery, user.recovery_codes[0])
    assert r.status_code == 200, r.text
    after = await scrape(api)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("cloudmfa_password_checks_total", outcome="signed_in") == 2
    assert grew("cloudmfa_password_checks_total", outcome="wrong_password") == 1
    assert grew("cloudmfa_password_checks_total", outcome="unknown_account") == 1
    assert grew("cloudmfa_password_checks_total", outcome="second_factor_required") == 3
    assert grew("cloudmfa_second_factor_checks_total", factor_type="totp", outcome="failed") == 1
    assert grew("cloudmfa_second_factor_checks_total", factor_type="totp", outcome="succeeded") == 1
    assert (
        grew("cloudmfa_second_factor_checks_total", factor_type="recovery", outcome="succeeded")
        == 1
    )
    assert grew("cloudmfa_sign_ins_total", factor_type="none") == 2
    assert grew("cloudmfa_sign_ins_total", factor_type="totp") == 1
    assert grew("cloudmfa_sign_ins_total", factor_type="recovery") == 1
    text = (await api.client.get("/metrics", headers=bearer(TOKEN))).text
    for secret in (plain["email"], user.email, user.secret, user.recovery_codes[0], PASSWORD):
        assert secret not in text


async def test_refusals_are_counted_by_kind(guarded: Api) -> None:
    api = guarded
    account = await api.sign_up()
    before = await scrape(api)
    for _ in range(3):  # login_max_failures=3 in this module
        r = await api.client.post(
            "/api/v1/auth/login", json={"email": account["email"], "password": "no-" + PASSWORD}
        )
        assert_problem(r, 401, "invalid_credentials")
    r = await api.client.post(
        "/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD}
    )
    assert_problem(r, 429, "rate_limited")
    after = await scrape(api)
    assert (
        value(after, "cloudmfa_rate_limited_total", kind="account")
        - value(before, "cloudmfa_rate_limited_total", kind="account")
        == 1
    )
    assert (
        value(after, "cloudmfa_password_checks_total", outcome="rate_limited")
        - value(before, "cloudmfa_password_checks_total", outcome="rate_limited")
        == 1
    )


async def test_the_per_ip_limit_counts_as_ip(backend: dict[str, Any]) -> None:
    app, api = await start_api(make_settings(backend, ip_rate_limit="2/minute"))
    async with app.router.lifespan_context(app), api.client:
        before = value(
            samples((await api.client.get("/metrics")).text),
            "cloudmfa_rate_limited_total",
            kind="ip",
        )
        for _ in range(3):
            r = await api.client.post("/api/v1/auth/login", json={})
        assert_problem(r, 429, "rate_limited")
        after = value(
            samples((await api.client.get("/metrics")).text),
            "cloudmfa_rate_limited_total",
            kind="ip",
        )
        assert after - before == 1


async def test_the_docs_routes_have_labels_of_their_own(guarded: Api) -> None:
    for path in ("/docs", "/openapi.json"):
        assert (await guarded.client.get(path)).status_code == 200, path
    figures = await scrape(guarded)
    routes = {
        dict(labels).get("route")
        for name, labels in figures
        if name == "cloudmfa_http_requests_total"
    }
    assert {"/docs", "/openapi.json"} <= routes


async def test_pool_use_is_exposed(guarded: Api) -> None:
    await guarded.signed_in("pools")
    figures = await scrape(guarded)
    assert value(figures, "cloudmfa_db_pool_connections", state="open") >= 1
    assert value(figures, "cloudmfa_db_pool_connections", state="in_use") >= 0
    assert value(figures, "cloudmfa_db_pool_capacity") >= 15
    assert value(figures, "cloudmfa_password_hash_threads") >= 1
    assert value(figures, "cloudmfa_password_hash_queue") >= 0
    if guarded.svc.settings.redis_url:
        assert value(figures, "cloudmfa_redis_pool_capacity") >= 256
        assert value(figures, "cloudmfa_redis_pool_connections_in_use") >= 0


async def test_the_hash_queue_counts_hashes_waiting_for_a_thread() -> None:
    """One thread, held busy: the hashes behind it are queued; a queued one that is cancelled
    leaves the queue without running."""
    hashing = PasswordHashing(time_cost=1, memory_kib=8192, parallelism=1, threads=1)

    def queued() -> float:  # this process's own value, read through the public API
        return metrics.REGISTRY.get_sample_value("cloudmfa_password_hash_queue") or 0.0

    base = queued()
    release = threading.Event()
    running = threading.Event()

    def hold(_: str) -> str:
        running.set()
        release.wait(timeout=30)
        return "held"

    busy = asyncio.create_task(hashing._run(hold, "x"))  # noqa: SLF001
    await asyncio.to_thread(running.wait, 30)
    waiting = [asyncio.create_task(hashing.hash(PASSWORD)) for _ in range(2)]
    cancelled = asyncio.create_task(hashing.hash(PASSWORD))
    await asyncio.sleep(0)
    assert queued() - base == 3
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert queued() - base == 2
    release.set()
    assert await busy == "held"
    hashes = await asyncio.gather(*waiting)
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert queued() == base


async def test_services_closed_without_a_start_leave_the_capacity_gauges_alone(
    guarded: Api,
) -> None:
    from cloudmfa.services import Services

    before = value(await scrape(guarded), "cloudmfa_db_pool_capacity")
    never_started = Services.build(guarded.svc.settings)
    await never_started.close()
    twice = Services.build(guarded.svc.settings)
    await twice.start(migrate=False)
    await twice.close()
    await twice.close()
    assert value(await scrape(guarded), "cloudmfa_db_pool_capacity") == before

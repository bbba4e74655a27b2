"""The delivery outbox over the real flows (delivery/outbox.py, in_process.py): on SQLite and on
PostgreSQL with Redis, with a provider of the tests' own behind the Provider protocol (our own
interface: it only records what it was handed, or refuses as told)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Literal

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

import conftest
from cloudmfa.app import create_app
from cloudmfa.clock import FrozenClock
from cloudmfa.delivery.base import Message, MessageRejected, ProviderUnavailable, Receipt
from cloudmfa.delivery.chain import ProviderChain
from cloudmfa.delivery.in_process import InProcessDispatcher
from cloudmfa.delivery.outbox import (
    HANDOVER_GRACE_S,
    LEASE_S,
    DatabaseOutbox,
    Deliverer,
    backoff_s,
)
from cloudmfa.delivery.providers import Providers
from cloudmfa.store import outbox as outbox_repo
from cloudmfa.store.models import delivery_outbox
from conftest import Api
from recording import events_of, new_phone, pass_cooldown
from support import assert_authenticated, assert_problem, verify

Behaviour = Literal["ok", "down", "reject", "hang"]


class ScriptedProvider:
    """Takes messages, or refuses them as its script says (then "ok" once the script ends)."""

    def __init__(self, name: str, default: Behaviour = "ok") -> None:
        self.name = name
        self.default: Behaviour = default
        self.script: list[Behaviour] = []
        self.taken: list[tuple[str, Message]] = []  # (idempotency key, message)
        self.tried: list[str] = []
        self.released = asyncio.Event()
        self.hanging = asyncio.Event()  # set once a send hangs

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        self.tried.append(idempotency_key)
        behaviour = self.script.pop(0) if self.script else self.default
        if behaviour == "down":
            raise ProviderUnavailable(self.name, "connection refused")
        if behaviour == "reject":
            raise MessageRejected(self.name, "invalid destination")
        if behaviour == "hang":
            self.hanging.set()
            await self.released.wait()
        self.taken.append((idempotency_key, message))
        return Receipt(self.name, f"ref-{idempotency_key}")

    async def aclose(self) -> None:
        return None

    def codes_to(self, to: str) -> list[str]:
        return [_code(m.text) for _, m in self.taken if m.to == to]


def _code(text: str) -> str:
    match = re.search(r"\b(\d{6,8})\b", text)
    assert match, text
    return match.group(1)


class Rig:
    def __init__(self, api: Api, first: ScriptedProvider, second: ScriptedProvider) -> None:
        self.api, self.first, self.second = api, first, second

    @property
    def dispatcher(self) -> InProcessDispatcher:
        outbox = self.api.svc.outbox
        assert isinstance(outbox, DatabaseOutbox)
        assert isinstance(outbox.dispatcher, InProcessDispatcher)
        return outbox.dispatcher

    async def settle(self) -> None:
        """Hand over what is due now and wait for it to be sent."""
        await self.dispatcher.sweep()
        await self.dispatcher.drain()

    def reset(self) -> None:
        for p in (self.first, self.second):
            p.script.clear()
            p.default = "ok"


@pytest_asyncio.fixture(scope="module")
async def rig(backend: dict[str, Any]) -> AsyncIterator[Rig]:
    settings = conftest.test_settings(
        backend, enabled_factors="totp,sms,email,recovery", delivery_max_attempts=3
    )
    first, second = ScriptedProvider("first"), ScriptedProvider("second")
    providers = Providers(email=ProviderChain([first, second]), sms=ProviderChain([first, second]))
    clock = FrozenClock()
    app = create_app(settings, clock=clock, providers=providers)
    api = Api(
        client=httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
            base_url="http://testserver",
        ),
        svc=app.state.services,
        clock=clock,
    )
    async with app.router.lifespan_context(app), api.client:
        given = Rig(api, first, second)
        # The sweeper every second would race the tests' steps; they sweep themselves.
        dispatcher = given.dispatcher
        if dispatcher._sweeper is not None:
            dispatcher._sweeper.cancel()
        yield given


@pytest.fixture(autouse=True)
def _fresh_script(rig: Rig) -> None:
    rig.reset()


async def sms_user(rig: Rig) -> tuple[dict[str, Any], dict[str, Any], str]:
    """An account with an active sms factor (activated with the code the provider got)."""
    api = rig.api
    phone = new_phone()
    user, headers = await api.signed_in("sms")
    r = await api.client.post(
        "/api/v1/me/factors", json={"type": "sms", "phone": phone}, headers=headers
    )
    assert r.status_code == 201, r.text
    factor = r.json()
    await rig.dispatcher.drain()
    [code] = rig.first.codes_to(phone)
    r = await api.client.post(
        f"/api/v1/me/factors/{factor['id']}/activate", json={"code": code}, headers=headers
    )
    assert r.status_code == 200, r.text
    await pass_cooldown(api, factor["id"])
    await rig.dispatcher.drain()  # the "factor added" notice
    return user, factor, phone


async def challenge(api: Api, mfa_token: str, factor_id: str) -> Any:
    return await api.client.post(
        "/api/v1/auth/challenge", json={"mfa_token": mfa_token, "factor_id": factor_id}
    )


async def row(api: Api, message_id: str) -> dict[str, Any]:
    async with api.svc.reader.connect() as conn:
        found = (
            await conn.execute(select(delivery_outbox).where(delivery_outbox.c.id == message_id))
        ).one()
    return dict(found._mapping)


async def submit(api: Api, to: str = "+14155550100", *, hand_over: bool = True) -> str:
    """A message committed to the outbox and, as a flow does, handed to delivery (or not: then
    only a sweeper finds it, once HANDOVER_GRACE_S has passed)."""
    message = Message("sms", to, "code", "123456 is your code")
    async with api.svc.engine.begin() as conn:
        message_id = await api.svc.outbox.submit(conn, message)
    if hand_over:
        await api.svc.outbox.dispatch(message_id)
    return message_id


# --- the journey ------------------------------------------------------------------------------


async def test_a_code_is_delivered_once_and_its_text_erased(rig: Rig) -> None:
    api = rig.api
    user, factor, phone = await sms_user(rig)
    login = await api.login(user["email"])
    r = await challenge(api, login["mfa_token"], factor["id"])
    assert r.status_code == 202, r.text
    await rig.dispatcher.drain()
    sent = [(key, m) for key, m in rig.first.taken if m.to == phone]
    assert len(sent) == 2  # the enrolment's code and this one, each once
    key, message = sent[-1]
    stored = await row(api, key)  # the idempotency key is the row's id
    assert stored["status"] == "sent" and stored["provider"] == "first"
    assert stored["sealed"] is None and stored["attempts"] == 1
    assert stored["user_id"] == user["id"]
    assert_authenticated(await verify(api, login["mfa_token"], factor["id"], _code(message.text)))
    assert rig.second.tried == []


async def test_a_rolled_back_submit_sends_nothing(rig: Rig) -> None:
    api = rig.api
    phone = new_phone()
    with pytest.raises(RuntimeError):
        async with api.svc.engine.begin() as conn:
            message_id = await api.svc.outbox.submit(
                conn, Message("sms", phone, "code", "111111 is your code")
            )
            raise RuntimeError("the flow failed after submitting")
    await api.svc.outbox.dispatch(message_id)  # even if a flow dispatched it anyway
    await rig.settle()
    assert [m for _, m in rig.first.taken if m.to == phone] == []
    async with api.svc.reader.connect() as conn:
        assert await outbox_repo.status_of(conn, message_id) is None


async def test_a_message_never_handed_over_is_found_by_the_sweeper(rig: Rig) -> None:
    """A crash between the commit and the hand-over loses nothing. The sweeper leaves a fresh
    row alone for a while (it was handed over as it committed, as a rule)."""
    message_id = await submit(rig.api, hand_over=False)
    await rig.settle()
    assert message_id not in rig.first.tried
    assert (await row(rig.api, message_id))["status"] == "queued"
    rig.api.clock.advance(seconds=HANDOVER_GRACE_S)
    await rig.settle()
    assert [key for key, _ in rig.first.taken].count(message_id) == 1
    assert (await row(rig.api, message_id))["status"] == "sent"


async def test_a_transient_refusal_is_retried_with_backoff_then_sent(rig: Rig) -> None:
    api = rig.api
    rig.first.script = ["down"]
    rig.second.script = ["down"]
    message_id = await submit(api)
    await rig.settle()
    stored = await row(api, message_id)
    assert stored["status"] == "queued" and stored["attempts"] == 1
    assert stored["next_try_at"] == api.clock.now() + timedelta(seconds=backoff_s(1))
    assert "connection refused" in stored["reason"]
    await rig.settle()  # not due yet: nothing is tried
    assert rig.first.tried.count(message_id) == 1
    api.clock.advance(seconds=backoff_s(1))
    await rig.settle()
    assert [key for key, _ in rig.first.taken].count(message_id) == 1
    assert (await row(api, message_id))["status"] == "sent"
    assert backoff_s(2) == 2 * backoff_s(1)


async def test_failover_along_the_chain_sends_one_message(rig: Rig) -> None:
    rig.first.default = "down"
    message_id = await submit(rig.api)
    await rig.settle()
    assert rig.first.tried.count(message_id) == 1
    assert [key for key, _ in rig.second.taken] == [message_id]
    assert (await row(rig.api, message_id))["provider"] == "second"


async def test_transient_refusals_end_in_failure_after_the_last_attempt(rig: Rig) -> None:
    api = rig.api
    rig.first.default = rig.second.default = "down"
    message_id = await submit(api)
    for attempt in range(1, 4):  # CLOUDMFA_DELIVERY_MAX_ATTEMPTS=3 here
        await rig.settle()
        api.clock.advance(seconds=backoff_s(attempt))
    stored = await row(api, message_id)
    assert stored["status"] == "failed" and stored["attempts"] == 3 and stored["sealed"] is None


async def test_when_every_provider_rejects_the_user_learns_it(rig: Rig) -> None:
    api = rig.api
    user, factor, phone = await sms_user(rig)
    rig.first.default = rig.second.default = "reject"
    login = await api.login(user["email"])
    r = await challenge(api, login["mfa_token"], factor["id"])
    assert r.status_code == 202, r.text
    await rig.dispatcher.drain()
    [failed] = await events_of(api, user["id"], "delivery.failed")
    details = failed["details"]
    assert details["channel"] == "sms" and details["providers"] == ["first", "second"]
    assert "invalid destination" in details["reason"]
    assert phone not in str(failed) and phone[-4:] not in str(failed)
    message_id = details["message_id"]
    stored = await row(api, message_id)
    assert stored["status"] == "failed" and stored["sealed"] is None
    # A guess at the code that never came: 502 delivery_failed, not 401 invalid_code.
    r = await verify(api, login["mfa_token"], factor["id"], "000000")
    body = assert_problem(r, 502, "delivery_failed")
    assert "new code" in body["detail"]
    # A new code that arrives supersedes the failure: a wrong guess is a wrong code again.
    rig.reset()
    api.clock.advance(seconds=31)
    await pass_cooldown(api, factor["id"])
    assert (await challenge(api, login["mfa_token"], factor["id"])).status_code == 202
    await rig.dispatcher.drain()
    assert_problem(
        await verify(api, login["mfa_token"], factor["id"], "000000"), 401, "invalid_code"
    )
    code = rig.first.codes_to(phone)[-1]
    assert_authenticated(await verify(api, login["mfa_token"], factor["id"], code))


async def test_an_enrolment_code_that_failed_answers_502_on_activation(rig: Rig) -> None:
    api = rig.api
    _, headers = await api.signed_in("sms")
    rig.first.default = rig.second.default = "reject"
    r = await api.client.post(
        "/api/v1/me/factors", json={"type": "sms", "phone": new_phone()}, headers=headers
    )
    assert r.status_code == 201, r.text
    await rig.dispatcher.drain()
    r = await api.client.post(
        f"/api/v1/me/factors/{r.json()['id']}/activate", json={"code": "000000"}, headers=headers
    )
    assert_problem(r, 502, "delivery_failed")


# --- concurrency ------------------------------------------------------------------------------


async def test_two_dispatchers_racing_send_each_message_once(rig: Rig) -> None:
    api = rig.api
    ids = [await submit(api, to=new_phone(), hand_over=False) for _ in range(40)]
    api.clock.advance(seconds=HANDOVER_GRACE_S)  # so the sweepers find them

    def dispatcher() -> InProcessDispatcher:
        providers = Providers(email=ProviderChain([rig.first]), sms=ProviderChain([rig.first]))
        return InProcessDispatcher(
            Deliverer(api.svc.engine, api.svc.secretbox, api.clock, providers),
            concurrency=8,
            sweep_interval_s=0,
        )

    one, two = dispatcher(), dispatcher()
    await asyncio.gather(one.sweep(), two.sweep(), rig.dispatcher.sweep())
    await asyncio.gather(one.drain(), two.drain(), rig.dispatcher.drain())
    taken = [key for key, _ in rig.first.taken]
    assert sorted(k for k in taken if k in ids) == sorted(ids)  # every one, each once


async def test_a_claim_whose_lease_ran_out_is_taken_again(rig: Rig) -> None:
    api = rig.api
    message_id = await submit(api, hand_over=False)
    now = api.clock.now()
    async with api.svc.engine.begin() as conn:  # a dispatcher that claims, then dies
        stale = await outbox_repo.claim(
            conn, message_id, now=now, lease_until=now + timedelta(seconds=LEASE_S)
        )
    assert stale is not None
    await rig.settle()
    assert message_id not in rig.first.tried  # its lease holds
    api.clock.advance(seconds=LEASE_S)
    await rig.settle()
    assert [key for key, _ in rig.first.taken].count(message_id) == 1
    async with api.svc.engine.begin() as conn:  # the dead one's late word changes nothing
        assert not await outbox_repo.mark_failed(conn, stale, now=now, reason="late")
    assert (await row(api, message_id))["status"] == "sent"


async def test_parallel_challenges_inside_the_cooldown_send_one_code(rig: Rig) -> None:
    api = rig.api
    user, factor, phone = await sms_user(rig)
    login = await api.login(user["email"])
    answers = await asyncio.gather(
        *(challenge(api, login["mfa_token"], factor["id"]) for _ in range(10))
    )
    assert sorted(r.status_code for r in answers) == [202] + [429] * 9
    await rig.settle()
    assert len(rig.first.codes_to(phone)) == 2  # the enrolment's and one challenge's


# --- stopping ---------------------------------------------------------------------------------


async def test_stopping_is_bounded_while_a_provider_hangs(rig: Rig) -> None:
    api = rig.api
    rig.first.default = "hang"
    message_id = await submit(api, hand_over=False)
    providers = Providers(email=ProviderChain([rig.first]), sms=ProviderChain([rig.first]))
    dispatcher = InProcessDispatcher(
        Deliverer(api.svc.engine, api.svc.secretbox, api.clock, providers), sweep_interval_s=0.01
    )
    dispatcher.start()
    await dispatcher.hand_over([message_id])
    await asyncio.wait_for(rig.first.hanging.wait(), timeout=5)
    await asyncio.wait_for(dispatcher.stop(grace_s=0.1), timeout=5)
    assert dispatcher._sweeper is not None and dispatcher._sweeper.done()
    assert not dispatcher._in_flight
    # Cut short, the message keeps its claim until the lease ends, then is sent.
    assert (await row(api, message_id))["status"] == "sending"
    rig.first.default = "ok"
    api.clock.advance(seconds=LEASE_S)
    await rig.settle()
    assert (await row(api, message_id))["status"] == "sent"


async def test_an_app_with_a_hanging_delivery_shuts_down(backend: dict[str, Any]) -> None:
    """The lifespan's teardown returns (an earlier attempt hung the suite here)."""
    hanging = ScriptedProvider("hanging", default="hang")
    providers = Providers(email=ProviderChain([hanging]), sms=ProviderChain([hanging]))
    settings = conftest.test_settings(backend)
    app = create_app(settings, clock=FrozenClock(), providers=providers)
    svc = app.state.services

    async def lifetime() -> None:
        async with app.router.lifespan_context(app):
            async with svc.engine.begin() as conn:
                message_id = await svc.outbox.submit(conn, Message("sms", "+1", "s", "t"))
            await svc.outbox.dispatch(message_id)
            await hanging.hanging.wait()

    await asyncio.wait_for(lifetime(), timeout=20)

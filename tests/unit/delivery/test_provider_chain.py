"""Failover along a channel's providers (delivery/chain.py), and how the chains are configured."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloudmfa.config import Settings
from cloudmfa.delivery.base import Message, MessageRejected, ProviderUnavailable, Receipt
from cloudmfa.delivery.chain import ProviderChain
from cloudmfa.delivery.providers import build_providers

MESSAGE = Message(channel="sms", to="+14155550123", subject="code", text="123456")


class Scripted:
    """A provider that answers as told and counts what it was given."""

    def __init__(self, name: str, answer: Exception | None = None) -> None:
        self.name = name
        self.answer = answer
        self.given: list[str] = []

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        self.given.append(idempotency_key)
        if self.answer is not None:
            raise self.answer
        return Receipt(self.name, f"{self.name}-1")

    async def aclose(self) -> None:
        return None


async def test_the_first_provider_that_takes_the_message_is_the_only_one_used() -> None:
    first, second = Scripted("a"), Scripted("b")
    receipt = await ProviderChain([first, second]).send(MESSAGE, idempotency_key="k1")
    assert receipt == Receipt("a", "a-1")
    assert (first.given, second.given) == (["k1"], [])


@pytest.mark.parametrize("refusal", [ProviderUnavailable, MessageRejected])
async def test_a_refusal_of_either_kind_moves_on_to_the_next_provider(refusal: type) -> None:
    first, second = Scripted("a", refusal("a", "no")), Scripted("b")
    receipt = await ProviderChain([first, second]).send(MESSAGE, idempotency_key="k1")
    assert receipt.provider == "b"
    assert (first.given, second.given) == (["k1"], ["k1"])


async def test_every_provider_refusing_for_good_is_a_definitive_refusal() -> None:
    chain = ProviderChain(
        [
            Scripted("a", MessageRejected("a", "bad number")),
            Scripted("b", MessageRejected("b", "blocked")),
        ]
    )
    with pytest.raises(MessageRejected) as caught:
        await chain.send(MESSAGE, idempotency_key="k1")
    assert "bad number" in caught.value.reason and "blocked" in caught.value.reason


async def test_one_provider_that_may_take_it_later_makes_the_refusal_transient() -> None:
    chain = ProviderChain(
        [Scripted("a", MessageRejected("a", "no")), Scripted("b", ProviderUnavailable("b", "down"))]
    )
    with pytest.raises(ProviderUnavailable):
        await chain.send(MESSAGE, idempotency_key="k1")


def test_with_no_configuration_both_channels_go_to_the_console() -> None:
    providers = build_providers(Settings(_env_file=None))
    assert providers.chain("sms").names == ("console",)
    assert providers.chain("email").names == ("console",)


def test_a_provider_list_is_read_in_order_and_unknown_names_are_refused() -> None:
    settings = Settings(_env_file=None, sms_provider=" Console ")
    assert settings.sms_provider == ("console",)
    with pytest.raises(ValidationError, match="unknown sms provider"):
        Settings(_env_file=None, sms_provider="console,carrier-pigeon")
    with pytest.raises(ValidationError, match="named twice"):
        Settings(_env_file=None, email_provider="console,console")

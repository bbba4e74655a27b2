"""Failover along the configured providers of one channel
(``CLOUDMFA_SMS_PROVIDER=twilio,aws-sns``).

Each provider is tried in order until one takes the message. A refusal of either kind moves on to
the next: a transient one (the provider is down) because the next may be up, a definitive one
(this provider will never take the message) because another provider may still reach the
destination. What the chain raises when none took it tells the dispatcher what to do next:
MessageRejected when every provider refused for good (retrying is useless; the user must learn
it), ProviderUnavailable when at least one may take it later (retry with backoff).
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudmfa.delivery.base import (
    DeliveryError,
    Message,
    MessageRejected,
    Provider,
    ProviderUnavailable,
    Receipt,
)


class ProviderChain:
    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        self.providers = tuple(providers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.providers)

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        refusals: list[DeliveryError] = []
        for provider in self.providers:
            try:
                return await provider.send(message, idempotency_key=idempotency_key)
            except DeliveryError as exc:
                refusals.append(exc)
        reason = "; ".join(str(r) for r in refusals)
        if all(isinstance(r, MessageRejected) for r in refusals):
            raise MessageRejected(",".join(self.names), reason)
        raise ProviderUnavailable(",".join(self.names), reason)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()

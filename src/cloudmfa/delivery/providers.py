"""The providers of each channel, built from configuration (``CLOUDMFA_EMAIL_PROVIDER``,
``CLOUDMFA_SMS_PROVIDER``), each channel's list a failover chain in the order given.

A provider module is imported only when configured: an SMTP deployment never loads boto3, Twilio
or the Azure SDKs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudmfa.delivery.base import Channel, Provider
from cloudmfa.delivery.chain import ProviderChain

if TYPE_CHECKING:
    from cloudmfa.config import Settings

ProviderFactory = Callable[["Settings"], Provider]


def _console(settings: Settings) -> Provider:
    from cloudmfa.delivery.console import ConsoleProvider

    return ConsoleProvider()


# Every provider of each channel, by its configured name.
FACTORIES: dict[Channel, dict[str, ProviderFactory]] = {
    "email": {"console": _console},
    "sms": {"console": _console},
}
PROVIDER_NAMES: dict[Channel, tuple[str, ...]] = {
    channel: tuple(factories) for channel, factories in FACTORIES.items()
}


@dataclass
class Providers:
    email: ProviderChain
    sms: ProviderChain

    def chain(self, channel: Channel) -> ProviderChain:
        return self.email if channel == "email" else self.sms

    async def aclose(self) -> None:
        await self.email.aclose()
        await self.sms.aclose()


def build_providers(settings: Settings) -> Providers:
    """Both channels' chains. Raises ValueError naming the setting when a configured provider
    lacks what it needs."""

    def chain(channel: Channel, names: tuple[str, ...]) -> ProviderChain:
        return ProviderChain([FACTORIES[channel][name](settings) for name in names])

    return Providers(
        email=chain("email", settings.email_provider), sms=chain("sms", settings.sms_provider)
    )

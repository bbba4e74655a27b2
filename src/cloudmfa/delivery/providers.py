"""The providers of each channel, built from configuration (``CLOUDMFA_EMAIL_PROVIDER``,
``CLOUDMFA_SMS_PROVIDER``), each channel's list a failover chain in the order given.

A provider module is imported only when configured: an SMTP deployment never loads boto3, Twilio
or the Azure SDKs.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from cloudmfa.delivery.base import Channel, Provider
from cloudmfa.delivery.chain import ProviderChain

if TYPE_CHECKING:
    from cloudmfa.config import Settings

ProviderFactory = Callable[["Settings"], Provider]


def _console(settings: Settings) -> Provider:
    from cloudmfa.delivery.console import ConsoleProvider

    return ConsoleProvider()


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _tls(settings: Settings) -> ssl.SSLContext:
    from cloudmfa.delivery.tls import client_context

    try:
        return client_context(settings.delivery_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"CLOUDMFA_DELIVERY_CA_FILE: cannot load it: {exc}") from None


def _smtp(settings: Settings) -> Provider:
    from cloudmfa.delivery.smtp import SmtpProvider

    return SmtpProvider(
        host=str(settings.smtp_host),
        port=settings.smtp_port,
        security=settings.smtp_security,
        sender=str(settings.email_from),
        username=settings.smtp_username,
        password=_secret(settings.smtp_password),
        timeout_s=settings.delivery_timeout_s,
        tls_context=_tls(settings),
    )


def _ses(settings: Settings) -> Provider:
    from cloudmfa.delivery.ses import SesProvider

    return SesProvider(
        sender=str(settings.email_from),
        region=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        configuration_set=settings.ses_configuration_set,
        timeout_s=settings.delivery_timeout_s,
        ca_file=settings.delivery_ca_file,
    )


def _sns(settings: Settings) -> Provider:
    from cloudmfa.delivery.sns import SnsProvider

    return SnsProvider(
        region=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        sender_id=settings.sns_sender_id,
        timeout_s=settings.delivery_timeout_s,
        ca_file=settings.delivery_ca_file,
    )


def _azure_email(settings: Settings) -> Provider:
    from cloudmfa.delivery.azure import AzureEmailProvider

    return AzureEmailProvider(
        connection_string=str(_secret(settings.azure_communication_connection_string)),
        sender=str(settings.email_from),
        timeout_s=settings.delivery_timeout_s,
        tls_context=_tls(settings),
    )


def _azure_sms(settings: Settings) -> Provider:
    from cloudmfa.delivery.azure import AzureSmsProvider

    return AzureSmsProvider(
        connection_string=str(_secret(settings.azure_communication_connection_string)),
        sender=str(settings.azure_sms_from),
        timeout_s=settings.delivery_timeout_s,
        tls_context=_tls(settings),
    )


def _twilio(settings: Settings) -> Provider:
    from cloudmfa.delivery.twilio import TwilioProvider

    return TwilioProvider(
        account_sid=str(settings.twilio_account_sid),
        auth_token=str(_secret(settings.twilio_auth_token)),
        from_number=settings.twilio_from_number,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        api_base_url=settings.twilio_api_base_url,
        timeout_s=settings.delivery_timeout_s,
        tls_context=_tls(settings),
    )


def _webhook(settings: Settings) -> Provider:
    from cloudmfa.delivery.webhook import WebhookProvider

    return WebhookProvider(
        url=str(settings.sms_webhook_url),
        secret=_secret(settings.sms_webhook_secret),
        timeout_s=settings.delivery_timeout_s,
        tls_context=_tls(settings),
    )


# Every provider of each channel, by its configured name.
FACTORIES: dict[Channel, dict[str, ProviderFactory]] = {
    "email": {"console": _console, "smtp": _smtp, "aws-ses": _ses, "azure": _azure_email},
    "sms": {
        "console": _console,
        "aws-sns": _sns,
        "azure": _azure_sms,
        "twilio": _twilio,
        "webhook": _webhook,
    },
}
PROVIDER_NAMES: dict[Channel, tuple[str, ...]] = {
    channel: tuple(factories) for channel, factories in FACTORIES.items()
}

# The settings each provider cannot do without; a tuple inside is "one of these".
REQUIRED: dict[Channel, dict[str, tuple[str | tuple[str, ...], ...]]] = {
    "email": {
        "smtp": ("smtp_host", "email_from"),
        "aws-ses": ("email_from",),
        "azure": ("azure_communication_connection_string", "email_from"),
    },
    "sms": {
        "aws-sns": (),
        "azure": ("azure_communication_connection_string", "azure_sms_from"),
        "twilio": (
            "twilio_account_sid",
            "twilio_auth_token",
            ("twilio_messaging_service_sid", "twilio_from_number"),
        ),
        "webhook": ("sms_webhook_url",),
    },
}


def _variable(setting: str) -> str:
    return "CLOUDMFA_" + setting.upper()


def missing_settings(settings: Settings) -> list[str]:
    """A line for each setting a configured provider needs and lacks, naming its variable."""
    problems: list[str] = []
    configured: tuple[tuple[Channel, tuple[str, ...]], ...] = (
        ("email", settings.email_provider),
        ("sms", settings.sms_provider),
    )
    for channel, names in configured:
        for name in names:
            for need in REQUIRED[channel].get(name, ()):
                options = need if isinstance(need, tuple) else (need,)
                if not any(_is_set(getattr(settings, option)) for option in options):
                    wanted = " or ".join(_variable(option) for option in options)
                    problems.append(f"{wanted} is needed by the {channel} provider {name!r}")
    return problems


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


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

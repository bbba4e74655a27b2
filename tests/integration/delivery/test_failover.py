"""Chains built from configuration, as `serve` and `cloudmfa worker` build them: when the first
provider refuses connections, the second delivers exactly one message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudmfa.config import Settings
from cloudmfa.delivery.base import ProviderUnavailable
from cloudmfa.delivery.providers import build_providers
from peers import closed_port
from peers.aws import MotoServer
from peers.samples import EMAIL_TO, PHONE, an_email, an_sms
from peers.webhook import WebhookReceiver

SENDER = "no-reply@acme.example"
SECRET = "failover-webhook-secret"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as server:
        yield server  # type: ignore[misc]


async def test_email_smtp_refusing_connections_fails_over_to_ses(moto: MotoServer) -> None:
    moto.client("sesv2").create_email_identity(EmailIdentity=SENDER)
    before = len(moto.sent_emails())
    settings = Settings(
        _env_file=None,
        email_provider="smtp,aws-ses",
        smtp_host="127.0.0.1",
        smtp_port=closed_port(),
        smtp_security="none",
        email_from=SENDER,
        aws_region="eu-west-1",
        aws_endpoint_url=moto.url,
    )
    providers = build_providers(settings)
    try:
        receipt = await providers.chain("email").send(an_email("482913"), idempotency_key="f1")
    finally:
        await providers.aclose()
    assert receipt.provider == "aws-ses"
    sent = moto.sent_emails()[before:]
    assert len(sent) == 1 and sent[0]["destinations"]["ToAddresses"] == [EMAIL_TO]
    assert "482913" in sent[0]["body"]


async def test_sms_twilio_refusing_connections_fails_over_to_the_webhook(
    receiver: WebhookReceiver,
) -> None:
    settings = Settings(
        _env_file=None,
        sms_provider="twilio,webhook",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from_number="+18005550100",
        twilio_api_base_url=f"http://127.0.0.1:{closed_port()}",
        sms_webhook_url=receiver.url,
        sms_webhook_secret=SECRET,
    )
    providers = build_providers(settings)
    try:
        receipt = await providers.chain("sms").send(an_sms("482913"), idempotency_key="f2")
    finally:
        await providers.aclose()
    assert receipt.provider == "webhook"
    assert receiver.messages == [{"to": PHONE, "body": an_sms("482913").text}]


async def test_every_provider_down_is_transient_and_nothing_is_sent(
    receiver: WebhookReceiver,
) -> None:
    receiver.reset()
    settings = Settings(
        _env_file=None,
        sms_provider="webhook,aws-sns",
        sms_webhook_url=f"http://127.0.0.1:{closed_port()}/",
        aws_region="eu-west-1",
        aws_endpoint_url=f"http://127.0.0.1:{closed_port()}",
    )
    providers = build_providers(settings)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await providers.chain("sms").send(an_sms(), idempotency_key="f3")
    finally:
        await providers.aclose()
    assert "webhook:" in caught.value.reason and "aws-sns:" in caught.value.reason

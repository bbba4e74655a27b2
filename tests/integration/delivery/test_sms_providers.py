"""The SMS providers against their peers: twilio (the official client) against a server that
speaks Twilio's Messages API, webhook against a receiver that checks the signature, aws-sns
against the moto server, azure (the official SDK's async client) against a local HTTPS server
that speaks the Communication Services SMS API and checks its HMAC signature."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cloudmfa.clock import FrozenClock
from cloudmfa.delivery.azure import AzureSmsProvider
from cloudmfa.delivery.base import MessageRejected, ProviderUnavailable
from cloudmfa.delivery.sns import SnsProvider
from cloudmfa.delivery.tls import client_context
from cloudmfa.delivery.twilio import TwilioProvider
from cloudmfa.delivery.webhook import WebhookProvider
from peers import Certificates, closed_port
from peers.aws import MotoServer
from peers.azure import AzureCommunicationServer
from peers.samples import PHONE, an_sms, assert_safe
from peers.twilio import TwilioServer
from peers.webhook import WebhookReceiver, verify

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-0123456789abcdef"
FROM = "+18005550100"
SECRET = "webhook-shared-secret-of-some-length"
ACCESS_KEY = b"a test access key of 32 bytes.."


@pytest.fixture(scope="module")
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer(SID, TOKEN, FROM) as server:
        yield server  # type: ignore[misc]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as server:
        yield server  # type: ignore[misc]


@pytest.fixture(scope="module")
def azure(certificates: Certificates) -> Iterator[AzureCommunicationServer]:
    server = AzureCommunicationServer(
        certificates.server_context(), access_key=ACCESS_KEY, sms_from=FROM, email_from="x@y.z"
    )
    with server:
        yield server  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _fresh(
    twilio: TwilioServer, receiver: WebhookReceiver, azure: AzureCommunicationServer
) -> None:
    for peer in (twilio, receiver, azure):
        peer.reset()


# -- twilio -------------------------------------------------------------------------------------


def twilio_provider(base_url: str, **options: object) -> TwilioProvider:
    settings: dict[str, object] = {
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_number": FROM,
        "api_base_url": base_url,
        "timeout_s": 5,
    }
    settings.update(options)
    return TwilioProvider(**settings)  # type: ignore[arg-type]


async def test_twilio_sends_the_text_to_the_number(twilio: TwilioServer) -> None:
    provider = twilio_provider(twilio.url)
    try:
        receipt = await provider.send(an_sms("482913"), idempotency_key="k")
    finally:
        await provider.aclose()
    assert twilio.messages == [{"To": PHONE, "From": FROM, "Body": an_sms("482913").text}]
    assert receipt.reference is not None and receipt.reference.startswith("SM")
    assert "@acme.example #482913" in twilio.messages[0]["Body"]


async def test_twilio_with_a_messaging_service(twilio: TwilioServer) -> None:
    provider = twilio_provider(twilio.url, from_number=None, messaging_service_sid="MG" + "1" * 32)
    try:
        await provider.send(an_sms(), idempotency_key="k")
    finally:
        await provider.aclose()
    assert twilio.messages[0]["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in twilio.messages[0]


async def test_twilio_refusals_count_as_twilio_means_them(twilio: TwilioServer) -> None:
    invalid = an_sms(to="+1415")
    cases: list[tuple[TwilioProvider, type[Exception], str]] = [
        (twilio_provider(twilio.url), MessageRejected, "HTTP 400 error 21211"),
        (twilio_provider(twilio.url, auth_token="wrong"), MessageRejected, "HTTP 401 error 20003"),
    ]
    for provider, refusal, reason in cases:
        try:
            with pytest.raises(refusal, match=reason) as caught:
                await provider.send(invalid, idempotency_key="k")
        finally:
            await provider.aclose()
        assert_safe(str(caught.value), invalid)
    assert twilio.received == []


@pytest.mark.parametrize(
    ("status", "code"), [(429, 20429), (400, 21611), (500, 20500), (503, 20503)]
)
async def test_twilio_throttling_a_full_queue_and_its_failures_are_transient(
    twilio: TwilioServer, status: int, code: int
) -> None:
    twilio.refuse(status, {"code": code, "message": "later", "more_info": "", "status": status})
    provider = twilio_provider(twilio.url)
    try:
        with pytest.raises(ProviderUnavailable, match=f"HTTP {status} error {code}"):
            await provider.send(an_sms(), idempotency_key="k")
    finally:
        await provider.aclose()


async def test_twilio_unreachable_is_transient() -> None:
    provider = twilio_provider(f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(ProviderUnavailable, match="cannot reach the Twilio API"):
            await provider.send(an_sms(), idempotency_key="k")
    finally:
        await provider.aclose()


# -- webhook ------------------------------------------------------------------------------------


async def test_webhook_posts_to_and_body_signed_with_the_idempotency_key(
    receiver: WebhookReceiver,
) -> None:
    provider = WebhookProvider(url=receiver.url + "/sms", secret=SECRET, timeout_s=5)
    try:
        receipt = await provider.send(an_sms("482913"), idempotency_key="msg-7")
    finally:
        await provider.aclose()
    assert receiver.messages == [{"to": PHONE, "body": an_sms("482913").text}]
    request = receiver.received[0]
    assert request.route == "/sms" and request.headers["idempotency-key"] == "msg-7"
    assert request.headers["content-type"] == "application/json"
    assert receipt.reference is not None


async def test_the_receiver_refuses_a_wrong_secret_a_tampered_body_and_a_replay(
    receiver: WebhookReceiver,
) -> None:
    # A sender that does not know the secret: its requests are refused, and that is final.
    wrong = WebhookProvider(url=receiver.url, secret="not-the-secret", timeout_s=5)
    try:
        with pytest.raises(MessageRejected, match="HTTP 401"):
            await wrong.send(an_sms(), idempotency_key="k")
    finally:
        await wrong.aclose()
    # A request signed long ago (captured and sent again) is refused too.
    old = WebhookProvider(
        url=receiver.url, secret=SECRET, clock=FrozenClock(datetime(2020, 1, 1, tzinfo=UTC))
    )
    try:
        with pytest.raises(MessageRejected, match="HTTP 401"):
            await old.send(an_sms(), idempotency_key="k")
    finally:
        await old.aclose()
    assert receiver.received == []
    # An attacker who captured a fresh signed request and changes the number or the text.
    good = WebhookProvider(url=receiver.url, secret=SECRET)
    try:
        await good.send(an_sms(), idempotency_key="k")
    finally:
        await good.aclose()
    captured = receiver.received[0]
    tampered = json.loads(captured.body) | {"to": "+19005550199"}
    forged = json.dumps(tampered, separators=(",", ":")).encode()
    assert not verify(SECRET.encode(), captured.headers, forged, time.time())
    assert verify(SECRET.encode(), captured.headers, captured.body, time.time())
    async with httpx.AsyncClient() as client:
        answer = await client.post(receiver.url, content=forged, headers=dict(captured.headers))
    assert answer.status_code == 401 and len(receiver.received) == 1


async def test_webhook_without_a_secret_sends_no_signature() -> None:
    with WebhookReceiver() as open_receiver:
        provider = WebhookProvider(url=open_receiver.url)
        try:
            await provider.send(an_sms(), idempotency_key="k")
        finally:
            await provider.aclose()
        headers = open_receiver.received[0].headers  # type: ignore[attr-defined]
    assert "x-cloudmfa-signature" not in headers and "x-cloudmfa-timestamp" not in headers


@pytest.mark.parametrize(
    ("status", "refusal"),
    [
        (400, MessageRejected),
        (422, MessageRejected),
        (429, ProviderUnavailable),
        (502, ProviderUnavailable),
    ],
)
async def test_webhook_answers_count_by_status(
    receiver: WebhookReceiver, status: int, refusal: type[Exception]
) -> None:
    message = an_sms("482913")
    receiver.refuse(status, {"error": f"{PHONE} said 482913"})  # a receiver echoing the body
    provider = WebhookProvider(url=receiver.url, secret=SECRET)
    try:
        with pytest.raises(refusal) as caught:
            await provider.send(message, idempotency_key="k")
    finally:
        await provider.aclose()
    assert_safe(str(caught.value), message)


async def test_webhook_unreachable_is_transient() -> None:
    provider = WebhookProvider(url=f"http://127.0.0.1:{closed_port()}/sms", timeout_s=5)
    try:
        with pytest.raises(ProviderUnavailable, match="cannot reach the webhook"):
            await provider.send(an_sms(), idempotency_key="k")
    finally:
        await provider.aclose()


async def test_webhook_over_https_trusts_the_configured_ca_and_no_other(
    certificates: Certificates, other_ca: Path
) -> None:
    with WebhookReceiver(SECRET, tls=certificates.server_context()) as tls_receiver:
        trusted = WebhookProvider(
            url=tls_receiver.url + "/sms",
            secret=SECRET,
            tls_context=client_context(str(certificates.ca_file)),
        )
        strangers = [
            WebhookProvider(url=tls_receiver.url, secret=SECRET, tls_context=context)
            for context in (None, client_context(str(other_ca)))  # the system's CAs; another
        ]
        try:
            await trusted.send(an_sms("482913"), idempotency_key="k")
            for provider in strangers:
                with pytest.raises(ProviderUnavailable, match="cannot reach the webhook"):
                    await provider.send(an_sms(), idempotency_key="k")
        finally:
            for provider in (trusted, *strangers):
                await provider.aclose()
        assert tls_receiver.messages == [{"to": PHONE, "body": an_sms("482913").text}]


async def test_webhook_does_not_follow_a_redirect(receiver: WebhookReceiver) -> None:
    receiver.refuse(307, {}, headers={"Location": receiver.url + "/elsewhere"})
    provider = WebhookProvider(url=receiver.url + "/sms", secret=SECRET)
    try:
        with pytest.raises(MessageRejected, match="HTTP 307"):
            await provider.send(an_sms(), idempotency_key="k")
    finally:
        await provider.aclose()
    assert [r.route for r in receiver.refused] == ["/sms"] and receiver.received == []


# -- aws-sns ------------------------------------------------------------------------------------


async def test_sns_publishes_to_the_number(moto: MotoServer) -> None:
    before = len(moto.sent_sms())
    provider = SnsProvider(region="eu-west-1", endpoint_url=moto.url, timeout_s=5)
    try:
        receipt = await provider.send(an_sms("482913"), idempotency_key="k")
    finally:
        await provider.aclose()
    sent = moto.sent_sms()[before:]
    assert sent == [
        {"phone_number": PHONE, "message": an_sms("482913").text, "message_id": receipt.reference}
    ]


async def test_sns_an_invalid_number_is_definitive_and_unreachable_transient(
    moto: MotoServer,
) -> None:
    provider = SnsProvider(region="eu-west-1", endpoint_url=moto.url, timeout_s=5)
    try:
        with pytest.raises(MessageRejected, match="InvalidParameter"):
            await provider.send(an_sms(to="0044"), idempotency_key="k")
    finally:
        await provider.aclose()
    down = SnsProvider(region="eu-west-1", endpoint_url=f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(ProviderUnavailable, match="cannot reach AWS"):
            await down.send(an_sms(), idempotency_key="k")
    finally:
        await down.aclose()


# -- azure sms ----------------------------------------------------------------------------------


def azure_sms(
    server: AzureCommunicationServer, certificates: Certificates, **options: object
) -> AzureSmsProvider:
    settings: dict[str, object] = {
        "connection_string": server.connection_string,
        "sender": FROM,
        "timeout_s": 5,
        "tls_context": client_context(str(certificates.ca_file)),
    }
    settings.update(options)
    return AzureSmsProvider(**settings)  # type: ignore[arg-type]


async def test_azure_sms_arrives_signed(
    azure: AzureCommunicationServer, certificates: Certificates
) -> None:
    provider = azure_sms(azure, certificates)
    try:
        receipt = await provider.send(an_sms("482913"), idempotency_key="k")
    finally:
        await provider.aclose()
    [sent] = azure.sent("sms")
    assert sent["from"] == FROM and sent["message"] == an_sms("482913").text
    recipients = sent["smsRecipients"]
    assert isinstance(recipients, list) and [r["to"] for r in recipients] == [PHONE]
    assert receipt.reference is not None and receipt.reference.startswith("Outgoing_")


async def test_azure_sms_refusals(
    azure: AzureCommunicationServer, certificates: Certificates
) -> None:
    provider = azure_sms(azure, certificates)
    invalid = an_sms(to="0044")
    try:
        # The request is taken (202) but this recipient is not: definitive.
        with pytest.raises(MessageRejected, match="HTTP 400: Invalid To") as caught:
            await provider.send(invalid, idempotency_key="k")
        assert_safe(str(caught.value), invalid)
        azure.refuse(503, {"error": {"code": "ServiceUnavailable", "message": "down"}})
        with pytest.raises(ProviderUnavailable, match="HTTP 503"):
            await provider.send(an_sms(), idempotency_key="k")
    finally:
        await provider.aclose()
    azure.accept()
    wrong = azure_sms(azure, certificates, sender="+18005550199")
    try:
        with pytest.raises(MessageRejected, match="HTTP 401"):
            await wrong.send(an_sms(), idempotency_key="k")
    finally:
        await wrong.aclose()


async def test_azure_sms_concurrent_sends_on_one_client(
    azure: AzureCommunicationServer, certificates: Certificates
) -> None:
    provider = azure_sms(azure, certificates)
    try:
        await asyncio.gather(
            *(provider.send(an_sms(f"{i:06d}"), idempotency_key=f"k{i}") for i in range(20))
        )
    finally:
        await provider.aclose()
    texts = sorted(str(s["message"])[:6] for s in azure.sent("sms"))
    assert texts == [f"{i:06d}" for i in range(20)]

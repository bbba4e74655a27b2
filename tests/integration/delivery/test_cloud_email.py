"""The aws-ses provider against the moto server, and the azure email provider (the official
SDK's async client) against a local HTTPS server that speaks the Communication Services email
API and checks each request's HMAC signature."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import pytest

from cloudmfa.delivery.azure import AzureEmailProvider, operation_id
from cloudmfa.delivery.base import MessageRejected, ProviderUnavailable
from cloudmfa.delivery.ses import SesProvider
from cloudmfa.delivery.tls import client_context
from peers import Certificates, closed_port
from peers.aws import MotoServer
from peers.azure import AzureCommunicationServer
from peers.samples import EMAIL_TO, an_email, assert_safe

SENDER = "no-reply@acme.example"
ACCESS_KEY = b"a test access key of 32 bytes.."


@pytest.fixture(scope="module")
def azure(certificates: Certificates) -> Iterator[AzureCommunicationServer]:
    server = AzureCommunicationServer(
        certificates.server_context(),
        access_key=ACCESS_KEY,
        sms_from="+18005550100",
        email_from=SENDER,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def ses_identity(moto: MotoServer) -> str:
    moto.client("sesv2").create_email_identity(EmailIdentity=SENDER)
    return SENDER


def ses(endpoint: str, sender: str = SENDER) -> SesProvider:
    return SesProvider(sender=sender, region="eu-west-1", endpoint_url=endpoint, timeout_s=5)


# -- aws-ses ------------------------------------------------------------------------------------


async def test_ses_sends_what_moto_records(moto: MotoServer, ses_identity: str) -> None:
    before = len(moto.sent_emails())
    provider = ses(moto.url)
    try:
        receipt = await provider.send(an_email("482913"), idempotency_key="k1")
    finally:
        await provider.aclose()
    sent = moto.sent_emails()[before:]
    assert len(sent) == 1
    assert sent[0]["id"] == receipt.reference
    assert sent[0]["source"] == SENDER
    assert sent[0]["destinations"]["ToAddresses"] == [EMAIL_TO]
    assert sent[0]["subject"] == "Your Acme verification code"
    assert "482913" in sent[0]["body"] and "<p>" in sent[0]["body"]  # moto keeps the HTML


async def test_ses_an_unverified_sender_is_a_definitive_refusal(
    moto: MotoServer, ses_identity: str
) -> None:
    provider = ses(moto.url, sender="someone@unverified.example")
    message = an_email()
    try:
        with pytest.raises(MessageRejected, match="MessageRejected") as caught:
            await provider.send(message, idempotency_key="k")
    finally:
        await provider.aclose()
    assert_safe(str(caught.value), message)


async def test_ses_unreachable_is_transient() -> None:
    provider = ses(f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(ProviderUnavailable, match="cannot reach AWS"):
            await provider.send(an_email(), idempotency_key="k")
    finally:
        await provider.aclose()


async def test_ses_concurrent_sends_share_one_client(moto: MotoServer, ses_identity: str) -> None:
    before = len(moto.sent_emails())
    provider = ses(moto.url)
    try:
        await asyncio.gather(
            *(provider.send(an_email(f"{i:06d}"), idempotency_key=f"c{i}") for i in range(24))
        )
    finally:
        await provider.aclose()
    bodies = [m["body"] for m in moto.sent_emails()[before:]]
    assert sorted(b for i in range(24) for b in bodies if f"{i:06d}" in b) == sorted(bodies)
    assert len(bodies) == 24


# -- azure email --------------------------------------------------------------------------------


def azure_email(
    server: AzureCommunicationServer, certificates: Certificates, **options: object
) -> AzureEmailProvider:
    settings: dict[str, object] = {
        "connection_string": server.connection_string,
        "sender": SENDER,
        "timeout_s": 5,
        "tls_context": client_context(str(certificates.ca_file)),
    }
    settings.update(options)
    return AzureEmailProvider(**settings)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _fresh(azure: AzureCommunicationServer) -> None:
    azure.reset()


async def test_azure_email_arrives_signed_with_the_operation_id_of_its_key(
    azure: AzureCommunicationServer, certificates: Certificates
) -> None:
    provider = azure_email(azure, certificates)
    try:
        first = await provider.send(an_email("482913"), idempotency_key="k1")
        again = await provider.send(an_email("482913"), idempotency_key="k1")
    finally:
        await provider.aclose()
    assert first.reference == again.reference == operation_id("k1")
    sent = azure.sent("email")
    assert len(sent) == 2  # the peer does not deduplicate; the service does, by Operation-Id
    assert [r.headers["operation-id"] for r in azure.received] == [operation_id("k1")] * 2
    assert sent[0]["senderAddress"] == SENDER
    assert sent[0]["recipients"] == {"to": [{"address": EMAIL_TO}]}
    content = sent[0]["content"]
    assert isinstance(content, dict)
    assert content["subject"] == "Your Acme verification code"
    assert "482913" in content["plainText"] and "482913" in content["html"]


async def test_azure_email_with_a_wrong_key_is_a_definitive_refusal(
    azure: AzureCommunicationServer, certificates: Certificates
) -> None:
    wrong = base64.b64encode(b"not the resource's access key..").decode()
    provider = azure_email(
        azure, certificates, connection_string=f"endpoint={azure.url}/;accesskey={wrong}"
    )
    try:
        with pytest.raises(MessageRejected, match="HTTP 401"):
            await provider.send(an_email(), idempotency_key="k")
    finally:
        await provider.aclose()
    assert azure.received == [] and len(azure.refused) == 1


async def test_azure_email_an_unverified_sender_is_a_definitive_refusal(
    azure: AzureCommunicationServer, certificates: Certificates
) -> None:
    provider = azure_email(azure, certificates, sender="x@unverified.example")
    message = an_email()
    try:
        with pytest.raises(MessageRejected, match="HTTP 400: InvalidSenderUserName") as caught:
            await provider.send(message, idempotency_key="k")
    finally:
        await provider.aclose()
    assert_safe(str(caught.value), message)


@pytest.mark.parametrize("status", [429, 503])
async def test_azure_email_throttled_or_failing_is_transient(
    azure: AzureCommunicationServer, certificates: Certificates, status: int
) -> None:
    azure.refuse(status, {"error": {"code": "TooManyRequests", "message": "slow down"}})
    provider = azure_email(azure, certificates)
    try:
        with pytest.raises(ProviderUnavailable, match=f"HTTP {status}"):
            await provider.send(an_email(), idempotency_key="k")
    finally:
        await provider.aclose()
    assert len(azure.refused) == 1  # the SDK retried nothing: the chain moves on at once


async def test_azure_email_an_untrusted_certificate_or_nothing_listening_is_transient(
    azure: AzureCommunicationServer, certificates: Certificates
) -> None:
    for provider in (
        azure_email(azure, certificates, tls_context=None),  # the system's CAs only
        azure_email(
            azure,
            certificates,
            connection_string=azure.connection_string.replace(
                azure.url, f"https://127.0.0.1:{closed_port()}"
            ),
        ),
    ):
        try:
            with pytest.raises(ProviderUnavailable, match="cannot reach Azure"):
                await provider.send(an_email(), idempotency_key="k")
        finally:
            await provider.aclose()
    assert azure.received == []

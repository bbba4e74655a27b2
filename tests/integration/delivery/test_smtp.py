"""The smtp provider against a real SMTP server (aiosmtpd on 127.0.0.1): plain, STARTTLS with a
generated certificate and AUTH, implicit TLS; what arrives, and how each failure counts."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from cloudmfa.delivery.base import MessageRejected, ProviderUnavailable
from cloudmfa.delivery.smtp import SmtpProvider
from cloudmfa.delivery.tls import client_context
from peers import Certificates, closed_port
from peers.samples import EMAIL_TO, an_email, assert_safe
from peers.smtp import SmtpSink

SENDER = "Acme <no-reply@acme.example>"
LOGIN = ("relay-user", "relay-password-1")


@pytest.fixture(scope="module")
def plain() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def starttls(certificates: Certificates) -> Iterator[SmtpSink]:
    with SmtpSink(
        starttls=certificates.server_context(), require_starttls=True, login=LOGIN
    ) as sink:
        yield sink


@pytest.fixture(scope="module")
def implicit_tls(certificates: Certificates) -> Iterator[SmtpSink]:
    with SmtpSink(implicit_tls=certificates.server_context()) as sink:
        yield sink


@pytest.fixture(autouse=True)
def _fresh(plain: SmtpSink, starttls: SmtpSink, implicit_tls: SmtpSink) -> None:
    for sink in (plain, starttls, implicit_tls):
        sink.reset()


def provider(sink_port: int, security: str = "none", **options: object) -> SmtpProvider:
    return SmtpProvider(
        host="127.0.0.1",
        port=sink_port,
        security=security,  # type: ignore[arg-type]
        sender=SENDER,
        timeout_s=5,
        **options,  # type: ignore[arg-type]
    )


def parts(mail: EmailMessage) -> tuple[str, str]:
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def test_plain_delivers_text_and_html_as_alternatives(plain: SmtpSink) -> None:
    receipt = await provider(plain.port).send(an_email("482913"), idempotency_key="msg-1")
    assert len(plain.messages) == 1
    mail = plain.messages[0]
    assert mail["To"] == EMAIL_TO and mail["From"] == SENDER
    assert mail["Subject"] == "Your Acme verification code"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = parts(mail)
    assert "482913" in text and "482913" in html and "<p>" in html
    assert mail["Auto-Submitted"] == "auto-generated"
    # Every retry of one message carries the same Message-ID.
    assert mail["Message-ID"] == "<msg-1@acme.example>" == receipt.reference
    assert plain.envelopes == [("no-reply@acme.example", [EMAIL_TO])]
    assert plain.tls_used == [False]


async def test_starttls_with_the_private_ca_and_auth_delivers_encrypted(
    starttls: SmtpSink, certificates: Certificates
) -> None:
    smtp = provider(
        starttls.port,
        "starttls",
        username=LOGIN[0],
        password=LOGIN[1],
        tls_context=client_context(str(certificates.ca_file)),
    )
    await smtp.send(an_email("111222"), idempotency_key="msg-2")
    assert starttls.tls_used == [True]
    assert "111222" in parts(starttls.messages[0])[0]


async def test_a_wrong_password_is_a_definitive_refusal(
    starttls: SmtpSink, certificates: Certificates
) -> None:
    smtp = provider(
        starttls.port,
        "starttls",
        username=LOGIN[0],
        password="wrong",
        tls_context=client_context(str(certificates.ca_file)),
    )
    with pytest.raises(MessageRejected, match="authentication failed: 535"):
        await smtp.send(an_email(), idempotency_key="k")
    assert starttls.messages == []


async def test_a_certificate_no_trusted_ca_issued_is_never_sent_through(
    starttls: SmtpSink, implicit_tls: SmtpSink, other_ca: object
) -> None:
    """A relay presenting a certificate of a CA this service does not trust (the system's CAs,
    or another private CA) gets neither the password nor the code."""
    for sink, security in ((starttls, "starttls"), (implicit_tls, "tls")):
        for context in (None, client_context(str(other_ca))):
            smtp = provider(
                sink.port, security, username=LOGIN[0], password=LOGIN[1], tls_context=context
            )
            with pytest.raises(ProviderUnavailable, match="certificate not trusted"):
                await smtp.send(an_email(), idempotency_key="k")
        assert sink.messages == []


async def test_no_starttls_offered_when_it_is_required_is_a_definitive_refusal(
    plain: SmtpSink,
) -> None:
    """A relay (or someone in the middle) that strips STARTTLS does not get the code in clear."""
    with pytest.raises(MessageRejected, match="STARTTLS"):
        await provider(plain.port, "starttls").send(an_email(), idempotency_key="k")
    assert plain.messages == []


async def test_implicit_tls_delivers(implicit_tls: SmtpSink, certificates: Certificates) -> None:
    smtp = provider(implicit_tls.port, "tls", tls_context=client_context(str(certificates.ca_file)))
    await smtp.send(an_email(), idempotency_key="msg-3")
    assert implicit_tls.tls_used == [True] and len(implicit_tls.messages) == 1


@pytest.mark.parametrize(
    ("reply", "refusal"),
    [
        ("550 5.1.1 <ada.lovelace@example.org>: mailbox unavailable", MessageRejected),
        ("451 4.3.0 ada.lovelace greylisted, try again later", ProviderUnavailable),
    ],
)
async def test_a_refused_recipient_counts_by_its_reply_class(
    plain: SmtpSink, reply: str, refusal: type[Exception]
) -> None:
    plain.refuse_recipients(reply)
    message = an_email()
    with pytest.raises(refusal) as caught:
        await provider(plain.port).send(message, idempotency_key="k")
    assert_safe(str(caught.value), message)
    assert "<to>" in str(caught.value)
    assert plain.messages == []


async def test_nothing_listening_is_transient() -> None:
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await provider(closed_port()).send(an_email(), idempotency_key="k")


async def test_concurrent_sends_each_arrive_once(plain: SmtpSink) -> None:
    smtp = provider(plain.port)
    codes = [f"{100000 + i}" for i in range(20)]
    await asyncio.gather(*(smtp.send(an_email(code), idempotency_key=f"c{code}") for code in codes))
    received = sorted(re.findall(r"\b\d{6}\b", parts(mail)[0])[0] for mail in plain.messages)
    assert received == codes

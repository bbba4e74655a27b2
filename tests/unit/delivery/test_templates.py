"""The words of messages (delivery/templates.py): what they must carry and must not."""

from __future__ import annotations

import pytest

from cloudmfa.delivery.templates import (
    NOTICES,
    email_code,
    fits_one_segment,
    password_reset,
    security_notice,
    segment_limit,
)
from cloudmfa.delivery.templates import sms_code as sms


def test_an_sms_names_the_service_the_code_and_its_expiry_and_ends_with_the_webotp_line() -> None:
    message = sms(to="+14155550123", service="Acme", code="123456", minutes=10, host="id.acme.test")

    assert message.channel == "sms" and message.to == "+14155550123"
    assert message.text.startswith("123456 is your Acme code.")
    assert "10 minutes" in message.text
    assert message.text.splitlines()[-1] == "@id.acme.test #123456"
    assert fits_one_segment(message.text) and segment_limit(message.text) == 160


@pytest.mark.parametrize(
    "service", ["A" * 300, "Société Générale d'Authentification " * 5, "认证服务" * 30]
)
def test_an_sms_fits_one_segment_whatever_the_service_name(service: str) -> None:
    message = sms(to="+1", service=service, code="12345678", minutes=10, host="login.example.com")
    assert fits_one_segment(message.text), (len(message.text), segment_limit(message.text))
    assert message.text.splitlines()[-1] == "@login.example.com #12345678"
    assert "12345678 is your" in message.text


def test_a_text_outside_gsm7_gets_the_shorter_ucs2_segment() -> None:
    assert segment_limit("plain text") == 160
    assert segment_limit("emoji 🙂") == 70


def test_an_email_code_has_text_and_html_and_no_code_in_the_subject() -> None:
    message = email_code(to="a@example.com", service="Acme <b>", code="654321", minutes=10)
    assert "654321" in message.text and "654321" in (message.html or "")
    assert "654321" not in message.subject
    assert "10 minutes" in message.text
    assert "<b>" not in (message.html or "")  # the service name is escaped
    assert "Acme &lt;b&gt;" in (message.html or "")


def test_a_reset_email_carries_the_link_and_says_factors_stay() -> None:
    link = "https://id.example.com/reset-password?token=abc"
    message = password_reset(to="a@example.com", service="Acme", link=link, minutes=30)
    assert link in message.text and link in (message.html or "")
    assert "30 minutes" in message.text
    assert "second factor" in message.text


@pytest.mark.parametrize("kind", sorted(NOTICES))
def test_notices_say_what_happened_and_carry_no_link(kind: str) -> None:
    message = security_notice(to="a@example.com", service="Acme", kind=kind, detail='"Phone"')
    assert message.channel == "email"
    assert "Acme" in message.subject and "Acme" in message.text
    assert "http" not in message.text and "href" not in (message.html or "")

"""Messages as the service makes them (delivery/templates.py), to send through a provider."""

from __future__ import annotations

from cloudmfa.delivery.base import Message
from cloudmfa.delivery.templates import email_code, sms_code

EMAIL_TO = "ada.lovelace@example.org"
PHONE = "+14155550123"


def an_email(code: str = "482913", to: str = EMAIL_TO) -> Message:
    return email_code(to=to, service="Acme", code=code, minutes=10)


def an_sms(code: str = "482913", to: str = PHONE) -> Message:
    return sms_code(to=to, service="Acme", code=code, minutes=10, host="acme.example")


def assert_safe(reason: str, message: Message, code: str = "482913") -> None:
    """A refusal's reason holds neither the code nor the destination."""
    assert code not in reason, reason
    assert message.to not in reason, reason
    assert message.to.split("@")[0] not in reason, reason

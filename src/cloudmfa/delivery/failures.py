"""What every provider shares when a send fails: a reason safe to log and audit, and the line
between a transient refusal and a definitive one for an HTTP answer.

A reason never holds the message's text (it carries a code), nor its full destination: a
provider's error often echoes both ("+14155550123 is not a valid number", a webhook receiver
that quotes the body back), so everything a peer says passes through ``scrub`` first.
"""

from __future__ import annotations

import re

from cloudmfa.delivery.base import DeliveryError, Message, MessageRejected, ProviderUnavailable

REASON_MAX_CHARS = 200
# Six digits or more: a code (6 to 8 digits) or a phone number in some spelling of its own.
_LONG_DIGITS = re.compile(r"\d(?:[\s().-]?\d){5,}")


def scrub(text: str, message: Message) -> str:
    """``text`` with the destination and any long run of digits taken out, on one line."""
    cleaned = text.replace(message.to, "<to>")
    local, at, _domain = message.to.partition("@")
    if at and len(local) >= 3:
        cleaned = cleaned.replace(local, "<to>")  # "user" of user@example.com quoted alone
    cleaned = _LONG_DIGITS.sub("<digits>", cleaned)
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > REASON_MAX_CHARS:
        cleaned = cleaned[: REASON_MAX_CHARS - 1] + "…"
    return cleaned


def is_transient_status(status: int) -> bool:
    """An HTTP status that may go away by itself: a timeout, throttling, or the peer's own
    failure. Every other 4xx is the peer's final word on this request."""
    return status in (408, 425, 429) or status >= 500


def refusal_for_status(provider: str, status: int, detail: str, message: Message) -> DeliveryError:
    reason = f"HTTP {status}" + (f": {scrub(detail, message)}" if detail else "")
    if is_transient_status(status):
        return ProviderUnavailable(provider, reason)
    return MessageRejected(provider, reason)

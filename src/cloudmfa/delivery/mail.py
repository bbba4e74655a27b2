"""A message as an email: text, plus HTML as multipart/alternative, with a Message-ID made from
the idempotency key, so every retry of one message carries the same id and a mailbox that has it
already may drop the copy."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from cloudmfa.delivery.base import Message

_UNSAFE_IN_ID = re.compile(r"[^A-Za-z0-9._-]")


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def message_id(idempotency_key: str, sender: str) -> str:
    return f"<{_UNSAFE_IN_ID.sub('-', idempotency_key)}@{sender_domain(sender)}>"


def compose(message: Message, *, sender: str, idempotency_key: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to
    email["Subject"] = message.subject
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = message_id(idempotency_key, sender)
    # RFC 3834: sent by a machine, so vacation responders and the like stay silent.
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(message.text)
    if message.html is not None:
        email.add_alternative(message.html, subtype="html")
    return email

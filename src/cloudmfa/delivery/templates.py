"""The words of every message the service sends: codes by SMS and email, password-reset links,
and security notices. Plain text, plus HTML for email; each names the service.

An SMS is kept to one segment (160 GSM-7 characters, or 70 when the text needs UCS-2): a
message split in parts costs more, may arrive out of order, and breaks WebOTP autofill. Its last
line is the WebOTP origin-bound line (``@host #code``, WICG WebOTP "SMS format"), so a phone
offers the code only to the site it came from.
"""

from __future__ import annotations

from html import escape

from cloudmfa.delivery.base import Message

SMS_SEGMENT_GSM7 = 160
SMS_SEGMENT_UCS2 = 70

# The GSM 03.38 basic character set: a text of only these fits 160 characters a segment.
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def segment_limit(text: str) -> int:
    """The characters one SMS segment holds for this text."""
    return SMS_SEGMENT_GSM7 if set(text) <= _GSM7 else SMS_SEGMENT_UCS2


def fits_one_segment(text: str) -> bool:
    return len(text) <= segment_limit(text)


def sms_code(*, to: str, service: str, code: str, minutes: int, host: str) -> Message:
    """ "123456 is your <service> code. It expires in 10 minutes." and the WebOTP line. A long
    service name is shortened so that the whole fits one segment."""
    tail = f" code. It expires in {minutes} minutes.\n\n@{host} #{code}"
    head = f"{code} is your "
    name = service
    while name and not fits_one_segment(head + name + tail):
        name = name[:-1]
    text = (
        head + name.rstrip() + tail if name.strip() else f"{code} is your code.\n\n@{host} #{code}"
    )
    return Message("sms", to, f"{service} code", text)


def email_code(*, to: str, service: str, code: str, minutes: int) -> Message:
    subject = f"Your {service} verification code"  # not the code: lock screens show subjects
    text = (
        f"Your {service} verification code is:\n\n"
        f"    {code}\n\n"
        f"It expires in {minutes} minutes and works once. If you did not ask for it, someone "
        f"may know your password: change it, and do not share this code with anyone.\n"
    )
    html = (
        f"<p>Your {escape(service)} verification code is:</p>"
        f'<p style="font-size:24px;font-weight:bold;letter-spacing:4px">{escape(code)}</p>'
        f"<p>It expires in {minutes} minutes and works once. If you did not ask for it, "
        "someone may know your password: change it, and do not share this code with "
        "anyone.</p>"
    )
    return Message("email", to, subject, text, html)


def password_reset(*, to: str, service: str, link: str, minutes: int) -> Message:
    subject = f"Reset your {service} password"
    text = (
        f"Someone asked to reset the password of your {service} account.\n\n"
        f"To choose a new password, open this link within {minutes} minutes (it works once):\n\n"
        f"    {link}\n\n"
        "A reset does not turn off your second factor: signing in will still ask for it.\n"
        "If you did not ask for this, ignore this message; your password stays as it is.\n"
    )
    html = (
        f"<p>Someone asked to reset the password of your {escape(service)} account.</p>"
        f"<p>To choose a new password, open this link within {minutes} minutes "
        f'(it works once):</p><p><a href="{escape(link)}">{escape(link)}</a></p>'
        "<p>A reset does not turn off your second factor: signing in will still ask for it.</p>"
        "<p>If you did not ask for this, ignore this message; your password stays as it is.</p>"
    )
    return Message("email", to, subject, text, html)


# Security notices: what happened, never a secret, never a link to click (a notice is what a
# phishing mail imitates; the user is told to sign in the usual way instead).
NOTICES: dict[str, tuple[str, str]] = {
    "factor_added": ("A sign-in method was added", "A second factor ({detail}) was added"),
    "factor_removed": ("A sign-in method was removed", "A second factor ({detail}) was removed"),
    "password_changed": ("Your password was changed", "The password was changed"),
    "password_reset": ("Your password was reset", "The password was reset by email link"),
    "mfa_reset": (
        "Your sign-in methods were reset",
        "An administrator removed every second factor",
    ),
    "recovery_codes_regenerated": (
        "New recovery codes were made",
        "A new set of recovery codes replaced the old one",
    ),
}


def security_notice(*, to: str, service: str, kind: str, detail: str = "") -> Message:
    title, what = NOTICES[kind]
    sentence = what.format(detail=detail or "a factor")
    subject = f"{service}: {title}"
    text = (
        f"{sentence} on your {service} account.\n\n"
        "If this was you, there is nothing to do. If it was not, sign in to "
        f"{service} the way you usually do, change your password and review your sign-in "
        "methods, or contact your administrator.\n"
    )
    html = (
        f"<p>{escape(sentence)} on your {escape(service)} account.</p>"
        "<p>If this was you, there is nothing to do. If it was not, sign in to "
        f"{escape(service)} the way you usually do, change your password and review your "
        "sign-in methods, or contact your administrator.</p>"
    )
    return Message("email", to, subject, text, html)

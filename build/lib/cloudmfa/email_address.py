"""Email addresses as the service stores and finds them (API.md "Login"): Unicode NFC, the
domain in its IDNA (ASCII) form, case-folded. Sign-up, login, create-admin and every other
look-up by email go through ``normalise_email``, so one address has one spelling."""

from __future__ import annotations

import unicodedata

import idna


def normalise_email(email: str) -> str:
    text = unicodedata.normalize("NFC", email.strip())
    local, at, domain = text.rpartition("@")
    if not at:
        return _fold(text)
    return f"{_fold(local)}@{_ascii_domain(domain)}"


def _fold(text: str) -> str:
    # Case folding can leave a string that is no longer NFC (a folded letter may now combine
    # with the mark after it), so compose once more.
    return unicodedata.normalize("NFC", text.casefold())


def _ascii_domain(domain: str) -> str:
    """The domain's A-label form (IDNA 2008 with the UTS #46 mapping, as email-validator
    checks it at sign-up), so `bücher.example` and `xn--bcher-kva.example` are one domain."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError is one
        # No account has a domain sign-up refuses, so any stable spelling serves: login
        # then answers it as an unknown address, never with an error that tells them apart.
        return _fold(domain)

"""One-time codes by message (factors/codes/), the phone numbers SMS takes (factors/sms/phone.py)
and the email hint: no database, no app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from cloudmfa.clock import FrozenClock
from cloudmfa.errors import InvalidCode, ValidationFailed
from cloudmfa.factors.base import FactorDeps
from cloudmfa.factors.codes import CODE_TTL_S, OneTimeCodes
from cloudmfa.factors.email import email_hint
from cloudmfa.factors.sms.phone import check_country, parse_phone
from cloudmfa.security.secretbox import SecretBox, SecretKey


def deps(clock: FrozenClock, keys: list[SecretKey] | None = None) -> FactorDeps:
    box = SecretBox(keys or [SecretKey("k1", b"\x01" * 32)])
    return FactorDeps(clock=clock, secretbox=box, hashing=None, reader=None, issuer="cloudmfa")  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 12, 1, tzinfo=UTC))


def test_a_code_checks_once_issued_for_its_binding(clock: FrozenClock) -> None:
    codes = OneTimeCodes(deps(clock), digits=6)
    code, kept = codes.issue("login:a1:f1")

    assert len(code) == 6 and code.isdigit()
    codes.check(code, "login:a1:f1", kept)
    codes.check(f"{code[:3]} {code[3:]}", "login:a1:f1", kept)  # as people type it
    codes.check(f"{code[:3]}-{code[3:]}", "login:a1:f1", kept)


def test_what_is_kept_is_a_keyed_mac_not_the_code_nor_its_bare_hash(clock: FrozenClock) -> None:
    import hashlib

    code, kept = OneTimeCodes(deps(clock), digits=6).issue("login:a1:f1")

    text = str(kept)
    assert code not in text
    assert hashlib.sha256(code.encode()).hexdigest() not in text
    assert kept["mac"].startswith("k1:")


def test_a_code_is_refused_for_another_binding(clock: FrozenClock) -> None:
    codes = OneTimeCodes(deps(clock), digits=6)
    code, kept = codes.issue("login:a1:f1")

    for other in ("login:a2:f1", "login:a1:f2", "enrol:f1"):
        with pytest.raises(InvalidCode):
            codes.check(code, other, kept)


def test_a_code_expires_after_ten_minutes(clock: FrozenClock) -> None:
    codes = OneTimeCodes(deps(clock), digits=6)
    code, kept = codes.issue("enrol:f1")
    clock.advance(seconds=CODE_TTL_S - 1)
    codes.check(code, "enrol:f1", kept)

    clock.advance(seconds=1)
    with pytest.raises(InvalidCode, match="expired"):
        codes.check(code, "enrol:f1", kept)


@pytest.mark.parametrize("typed", ["", "abcdef", "12345", "1234567", "１２３４５６", "12345\u0663"])
def test_malformed_codes_are_refused(clock: FrozenClock, typed: str) -> None:
    codes = OneTimeCodes(deps(clock), digits=6)
    _, kept = codes.issue("enrol:f1")
    with pytest.raises(InvalidCode):
        codes.check(typed, "enrol:f1", kept)


def test_nothing_kept_or_a_wrong_code_is_refused(clock: FrozenClock) -> None:
    codes = OneTimeCodes(deps(clock), digits=6)
    code, kept = codes.issue("enrol:f1")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    with pytest.raises(InvalidCode):
        codes.check(wrong, "enrol:f1", kept)
    with pytest.raises(InvalidCode):
        codes.check(code, "enrol:f1", None)
    forged: dict[str, Any] = {**kept, "mac": "k1:" + "0" * 64}
    with pytest.raises(InvalidCode):
        codes.check(code, "enrol:f1", forged)


def test_eight_digits_when_configured_and_a_code_outlives_a_change(clock: FrozenClock) -> None:
    given = deps(clock)
    code, kept = OneTimeCodes(given, digits=8).issue("enrol:f1")
    assert len(code) == 8
    OneTimeCodes(given, digits=6).check(code, "enrol:f1", kept)  # sent before the change
    with pytest.raises(ValueError):
        OneTimeCodes(given, digits=9)


def test_codes_are_spread_over_every_digit(clock: FrozenClock) -> None:
    codes = OneTimeCodes(deps(clock), digits=6)
    seen = [codes.issue("x")[0] for _ in range(2000)]
    assert len(set(seen)) > 1990  # a repeat now and then, as 10**6 values allow
    assert {c[0] for c in seen} == set("0123456789")  # leading zeros kept


def test_a_code_made_under_a_key_that_left_the_ring_is_refused(clock: FrozenClock) -> None:
    code, kept = OneTimeCodes(deps(clock), digits=6).issue("enrol:f1")
    rotated = deps(clock, [SecretKey("k2", b"\x02" * 32)])
    with pytest.raises(InvalidCode):
        OneTimeCodes(rotated, digits=6).check(code, "enrol:f1", kept)


# --- phone numbers ---------------------------------------------------------------------------


def test_a_number_is_normalised_to_e164_with_its_country_and_hint() -> None:
    phone = parse_phone("+1 (415) 555-0123")
    assert (phone.e164, phone.country, phone.hint) == ("+14155550123", "US", "+1******0123")
    french = parse_phone("+33 6 12 34 56 78")
    assert (french.e164, french.country, french.hint) == ("+33612345678", "FR", "+33*****5678")


@pytest.mark.parametrize(
    "text", ["", "4155550123", "+1415555", "+999123456789", "phone", "+1 415 555 01234"]
)
def test_what_is_not_a_valid_international_number_is_a_validation_error(text: str) -> None:
    with pytest.raises(ValidationFailed, match="phone"):
        parse_phone(text)


@pytest.mark.parametrize(
    ("region", "kind"),
    [
        ("GB", PhoneNumberType.PREMIUM_RATE),
        ("GB", PhoneNumberType.UAN),
        ("GB", PhoneNumberType.TOLL_FREE),
        ("GB", PhoneNumberType.VOIP),
        ("GB", PhoneNumberType.FIXED_LINE),
        ("GB", PhoneNumberType.PAGER),
        ("FR", PhoneNumberType.PREMIUM_RATE),
        ("FR", PhoneNumberType.SHARED_COST),
    ],
)
def test_only_mobile_numbers_are_taken(region: str, kind: int) -> None:
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None
    text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    with pytest.raises(ValidationFailed, match="only to mobile numbers"):
        parse_phone(text)
    mobile = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    assert parse_phone(phonenumbers.format_number(mobile, phonenumbers.PhoneNumberFormat.E164))


def test_the_country_allow_list() -> None:
    phone = parse_phone("+33612345678")
    check_country(phone, frozenset())  # empty: every country
    check_country(phone, {"FR", "DE"})
    with pytest.raises(ValidationFailed, match="FR"):
        check_country(phone, {"US", "GB"})


def test_the_email_hint() -> None:
    assert email_hint("jane.doe@example.com") == "j***@example.com"
    assert email_hint("x@example.org") == "x***@example.org"

"""Phone numbers as the sms factor takes them: parsed and normalised to E.164 by
``phonenumbers`` (Google's libphonenumber metadata), of a type that reaches a phone held by a
person, and from a country the deployment allows.

Only numbers typed MOBILE or FIXED_LINE_OR_MOBILE (where a country's numbering does not tell the
two apart, as in the US) are taken. Premium-rate, shared-cost, toll-free, VoIP, pager and the
rest are refused: a premium-rate number that an attacker rents and enrols makes every code sent
to it revenue for them (SMS pumping, "toll fraud").
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType

from cloudmfa.errors import ValidationFailed

ACCEPTED_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_TYPE_NAMES = {
    value: name.lower().replace("_", "-")
    for name, value in vars(PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str  # "+14155550123"
    country: str  # ISO 3166-1 alpha-2, "US"
    country_code: int  # the calling code, 1

    @property
    def hint(self) -> str:
        """API.md: "+1******4567": the calling code and the last four digits."""
        prefix = f"+{self.country_code}"
        national = self.e164[len(prefix) :]
        return prefix + "*" * max(len(national) - 4, 0) + national[-4:]


def parse_phone(text: str, *, enrolling: bool = True) -> Phone:
    """The number in E.164 (spaces, dashes and brackets as people write them are fine; the
    leading + and calling code are needed); ValidationFailed otherwise. Validity and type are
    judged at enrolment only (``enrolling``): a later release of libphonenumber's metadata must
    not lock a user out of a number that was accepted."""
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise ValidationFailed(
            "phone: not a phone number in international form (E.164, such as +14155550123)"
        ) from None
    if not enrolling:
        return _phone(number)
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed("phone: not a valid phone number")
    kind = phonenumbers.number_type(number)
    if kind not in ACCEPTED_TYPES:
        named = _TYPE_NAMES.get(kind, "other")
        raise ValidationFailed(f"phone: codes are sent only to mobile numbers, not to {named} ones")
    return _phone(number)


def _phone(number: phonenumbers.PhoneNumber) -> Phone:
    region = phonenumbers.region_code_for_number(number) or "ZZ"  # libphonenumber's "unknown"
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country=region,
        country_code=int(number.country_code or 0),
    )


def check_country(phone: Phone, allowed: Set[str]) -> None:
    """CLOUDMFA_SMS_ALLOWED_COUNTRIES (empty: every country)."""
    if allowed and phone.country not in allowed:
        raise ValidationFailed(
            f"phone: codes are not sent to numbers of this country ({phone.country}) here"
        )

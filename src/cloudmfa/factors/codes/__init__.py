"""One-time codes delivered by message (the sms and email factor types share this).

A code is ``digits`` decimal digits from ``secrets`` (uniform: ``randbelow``), valid
``CODE_TTL_S`` seconds. What is kept is never the code but its HMAC-SHA256 under a key derived
from the service's key ring, over the code *and what it is bound to* (one login attempt and one
factor, or one enrolment): a 6-digit code's bare hash is reversed by trying a million codes,
and a kept value copied to another attempt matches nothing there.

Single use and the failure count are the flows' business: a login code lives with its attempt,
which the one successful verification spends and whose wrong tries are counted before a code
is checked; a resend replaces what the attempt keeps (the old code stops working) and leaves
the count alone. An enrolment code is spent by the activation that flips the factor to active.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.base import FactorDeps, LoginAttempt

CODE_TTL_S = 600  # API.md: ten minutes
_PURPOSE = "one-time code"
_SEPARATORS = re.compile(r"[\s-]")  # "123 456" and "123-456" as a user may type them
INVALID = "The code is not valid."


def login_binding(attempt: LoginAttempt, factor_id: str) -> str:
    return f"login:{attempt.id}:{factor_id}"


def enrolment_binding(factor_id: str) -> str:
    return f"enrol:{factor_id}"


class OneTimeCodes:
    def __init__(self, deps: FactorDeps, *, digits: int) -> None:
        if not 6 <= digits <= 8:
            raise ValueError("codes have 6 to 8 digits")
        self._deps = deps
        self.digits = digits

    @property
    def minutes(self) -> int:
        return CODE_TTL_S // 60

    def issue(self, binding: str) -> tuple[str, dict[str, Any]]:
        """A fresh code, and what to keep in its place until it is checked."""
        code = f"{secrets.randbelow(10**self.digits):0{self.digits}d}"
        kept = {
            "mac": self._deps.secretbox.mac(self._input(binding, code), purpose=_PURPOSE),
            "expires": self._deps.clock.now().timestamp() + CODE_TTL_S,
            "digits": self.digits,  # a change of CLOUDMFA_OTP_DIGITS spares codes already sent
        }
        return code, kept

    def check(self, typed: str, binding: str, kept: Mapping[str, Any] | None) -> None:
        """Raise InvalidCode unless ``typed`` is the live code issued for ``binding``."""
        if kept is None or "mac" not in kept:
            raise InvalidCode(INVALID)
        if self._deps.clock.now().timestamp() >= float(kept["expires"]):
            raise InvalidCode("The code has expired; ask for a new one.")
        code = _SEPARATORS.sub("", typed)
        if (
            len(code) != int(kept.get("digits", self.digits))
            or not code.isascii()
            or not code.isdigit()
        ):
            raise InvalidCode(INVALID)
        if not self._deps.secretbox.mac_matches(
            str(kept["mac"]), self._input(binding, code), purpose=_PURPOSE
        ):
            raise InvalidCode(INVALID)

    @staticmethod
    def _input(binding: str, code: str) -> bytes:
        return f"{binding}\x00{code}".encode()

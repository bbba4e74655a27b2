"""Checking a TOTP code (RFC 6238 §4, §5.2): pure, no storage, no clock of its own."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import pyotp

from cloudmfa.errors import InvalidCode

# RFC 6238 §5.2: accept one time step either side of the server clock for drift, never more.
DRIFT_STEPS = 1
_DIGESTS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}


@dataclass(frozen=True, slots=True)
class TotpParameters:
    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30


@dataclass(frozen=True, slots=True)
class MatchedStep:
    step: int


def time_step(unix_time: float, period: int) -> int:
    return int(unix_time // period)


def verify_totp_code(
    *,
    secret_base32: str,
    code: str,
    unix_time: float,
    params: TotpParameters,
    last_used_step: int | None,
) -> MatchedStep:
    """The time step the code belongs to, or InvalidCode.

    A step at or before ``last_used_step`` is refused (replay protection); the caller still has
    to claim the returned step atomically, since another request may be checking the same code.
    """
    candidate = code.strip().replace(" ", "")
    # isascii(): str.isdigit() also accepts other scripts' digits, which compare_digest refuses.
    if len(candidate) != params.digits or not (candidate.isascii() and candidate.isdigit()):
        raise InvalidCode("The code is not valid.")
    totp = pyotp.TOTP(
        secret_base32,
        digits=params.digits,
        digest=getattr(hashlib, _DIGESTS[params.algorithm]),
        interval=params.period,
    )
    current = time_step(unix_time, params.period)
    # Newest first, so a code valid for two steps claims the later one.
    for step in range(current + DRIFT_STEPS, current - DRIFT_STEPS - 1, -1):
        if last_used_step is not None and step <= last_used_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), candidate):
            return MatchedStep(step)
    raise InvalidCode("The code is not valid.")

"""verify_totp_code: RFC 6238 Appendix B, the §5.2 drift window, replay protection, input shape."""

from __future__ import annotations

import base64

import pyotp
import pytest

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.totp.verify import (
    MatchedStep,
    TotpParameters,
    time_step,
    verify_totp_code,
)


def b32(ascii_key: str) -> str:
    return base64.b32encode(ascii_key.encode("ascii")).decode("ascii")


# RFC 6238 Appendix B: the seeds are these ASCII strings, 20, 32 and 64 bytes long.
SEEDS = {
    "SHA1": b32("12345678901234567890"),
    "SHA256": b32("12345678901234567890123456789012"),
    "SHA512": b32("1234567890123456789012345678901234567890123456789012345678901234"),
}

# (time, algorithm, expected 8-digit TOTP), exactly the table of RFC 6238 Appendix B.
RFC_VECTORS = [
    (59, "SHA1", "94287082"),
    (59, "SHA256", "46119246"),
    (59, "SHA512", "90693936"),
    (1111111109, "SHA1", "07081804"),
    (1111111109, "SHA256", "68084774"),
    (1111111109, "SHA512", "25091201"),
    (1111111111, "SHA1", "14050471"),
    (1111111111, "SHA256", "67062674"),
    (1111111111, "SHA512", "99943326"),
    (1234567890, "SHA1", "89005924"),
    (1234567890, "SHA256", "91819424"),
    (1234567890, "SHA512", "93441116"),
    (2000000000, "SHA1", "69279037"),
    (2000000000, "SHA256", "90698825"),
    (2000000000, "SHA512", "38618901"),
    (20000000000, "SHA1", "65353130"),
    (20000000000, "SHA256", "77737706"),
    (20000000000, "SHA512", "47863826"),
]

EIGHT = {alg: TotpParameters(algorithm=alg, digits=8, period=30) for alg in SEEDS}
DEFAULT = TotpParameters()
SHA1_SEED = SEEDS["SHA1"]
NOW = 1111111111  # step 37037037, 1 s into it: a time well inside a step
NOW_STEP = NOW // 30


def verify(
    code: str,
    *,
    unix_time: float = NOW,
    params: TotpParameters = DEFAULT,
    last_used_step: int | None = None,
    secret: str = SHA1_SEED,
) -> MatchedStep:
    return verify_totp_code(
        secret_base32=secret,
        code=code,
        unix_time=unix_time,
        params=params,
        last_used_step=last_used_step,
    )


def code_at_step(step: int, *, secret: str = SHA1_SEED, digits: int = 6) -> str:
    return pyotp.TOTP(secret, digits=digits).at(step * 30)


# --- RFC 6238 Appendix B -----------------------------------------------------------------


def test_seeds_are_the_base32_of_the_rfc_ascii_keys() -> None:
    assert base64.b32decode(SEEDS["SHA1"]) == b"12345678901234567890"
    assert len(base64.b32decode(SEEDS["SHA256"])) == 32
    assert len(base64.b32decode(SEEDS["SHA512"])) == 64


@pytest.mark.parametrize(("unix_time", "algorithm", "expected"), RFC_VECTORS)
def test_rfc6238_appendix_b_vectors(unix_time: int, algorithm: str, expected: str) -> None:
    matched = verify(
        expected, unix_time=unix_time, params=EIGHT[algorithm], secret=SEEDS[algorithm]
    )
    assert matched == MatchedStep(unix_time // 30)


@pytest.mark.parametrize(("unix_time", "algorithm", "expected"), RFC_VECTORS)
def test_rfc_vector_refused_under_another_algorithm(
    unix_time: int, algorithm: str, expected: str
) -> None:
    # The same seed bytes under the wrong HMAC give another code; the digest choice matters.
    other = "SHA256" if algorithm == "SHA1" else "SHA1"
    with pytest.raises(InvalidCode):
        verify(expected, unix_time=unix_time, params=EIGHT[other], secret=SEEDS[algorithm])


@pytest.mark.parametrize(("unix_time", "algorithm", "expected"), RFC_VECTORS)
def test_rfc_vector_refused_far_from_its_time(
    unix_time: int, algorithm: str, expected: str
) -> None:
    with pytest.raises(InvalidCode):
        verify(
            expected, unix_time=unix_time + 3600, params=EIGHT[algorithm], secret=SEEDS[algorithm]
        )


@pytest.mark.parametrize(
    ("unix_time", "expected"), [(t, c) for t, a, c in RFC_VECTORS if a == "SHA1"]
)
def test_six_digit_default_is_the_low_six_digits(unix_time: int, expected: str) -> None:
    # RFC 4226 §5.3: a d-digit code is the truncated value mod 10^d, so the 6-digit code is the
    # last six digits of the 8-digit one. The defaults are SHA1, 6 digits, 30 s.
    assert DEFAULT == TotpParameters(algorithm="SHA1", digits=6, period=30)
    assert verify(expected[-6:], unix_time=unix_time) == MatchedStep(unix_time // 30)
    assert pyotp.TOTP(SHA1_SEED).at(unix_time) == expected[-6:]


def test_time_step() -> None:
    assert time_step(59, 30) == 1
    assert time_step(60, 30) == 2
    assert time_step(0, 30) == 0
    assert time_step(1111111109, 30) == 0x23523EC
    assert time_step(20000000000, 30) == 0x27BC86AA


# --- drift window (RFC 6238 §5.2: one step either side, never more) ------------------------


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_one_step_either_side_is_accepted(offset: int) -> None:
    code = code_at_step(NOW_STEP + offset)
    assert verify(code) == MatchedStep(NOW_STEP + offset)


@pytest.mark.parametrize("offset", [-2, 2, -3, 3, -10, 10])
def test_two_or_more_steps_off_are_refused(offset: int) -> None:
    code = code_at_step(NOW_STEP + offset)
    # Guard against a coincidental collision with an accepted step's code.
    assert code not in {code_at_step(NOW_STEP + d) for d in (-1, 0, 1)}
    with pytest.raises(InvalidCode):
        verify(code)


def test_drift_window_at_the_edges_of_a_step() -> None:
    start = NOW_STEP * 30  # first second of the step
    end = start + 29.999
    for t in (start, end):
        assert verify(code_at_step(NOW_STEP - 1), unix_time=t) == MatchedStep(NOW_STEP - 1)
        assert verify(code_at_step(NOW_STEP + 1), unix_time=t) == MatchedStep(NOW_STEP + 1)
        with pytest.raises(InvalidCode):
            verify(code_at_step(NOW_STEP - 2), unix_time=t)
        with pytest.raises(InvalidCode):
            verify(code_at_step(NOW_STEP + 2), unix_time=t)


def test_drift_window_with_eight_digits_and_sha512() -> None:
    params = TotpParameters(algorithm="SHA512", digits=8, period=30)
    totp = pyotp.TOTP(SEEDS["SHA512"], digits=8, digest="sha512")
    for offset in (-1, 0, 1):
        code = totp.at((NOW_STEP + offset) * 30)
        assert verify(code, params=params, secret=SEEDS["SHA512"]) == MatchedStep(NOW_STEP + offset)
    for offset in (-2, 2):
        with pytest.raises(InvalidCode):
            verify(totp.at((NOW_STEP + offset) * 30), params=params, secret=SEEDS["SHA512"])


def test_another_period() -> None:
    params = TotpParameters(period=60)
    totp = pyotp.TOTP(SHA1_SEED, interval=60)
    step = NOW // 60
    assert verify(totp.at(NOW), params=params) == MatchedStep(step)
    assert verify(totp.at(NOW - 60), params=params) == MatchedStep(step - 1)
    with pytest.raises(InvalidCode):
        verify(totp.at(NOW - 120), params=params)


def test_wrong_secret_is_refused() -> None:
    other = pyotp.random_base32()
    code = pyotp.TOTP(other).at(NOW)
    if code in {code_at_step(NOW_STEP + d) for d in (-1, 0, 1)}:
        pytest.skip("one-in-a-million collision")
    with pytest.raises(InvalidCode):
        verify(code)


# --- replay protection ---------------------------------------------------------------------


def test_returned_step_is_the_matched_step() -> None:
    matched = verify(code_at_step(NOW_STEP))
    assert isinstance(matched, MatchedStep)
    assert matched.step == NOW_STEP == time_step(NOW, 30)


def test_step_equal_to_last_used_is_refused() -> None:
    code = code_at_step(NOW_STEP)
    with pytest.raises(InvalidCode):
        verify(code, last_used_step=NOW_STEP)


def test_step_before_last_used_is_refused() -> None:
    with pytest.raises(InvalidCode):
        verify(code_at_step(NOW_STEP - 1), last_used_step=NOW_STEP - 1)
    with pytest.raises(InvalidCode):
        verify(code_at_step(NOW_STEP - 1), last_used_step=NOW_STEP)
    with pytest.raises(InvalidCode):
        verify(code_at_step(NOW_STEP), last_used_step=NOW_STEP + 1)


def test_step_after_last_used_is_accepted() -> None:
    assert verify(code_at_step(NOW_STEP), last_used_step=NOW_STEP - 1) == MatchedStep(NOW_STEP)
    assert verify(code_at_step(NOW_STEP + 1), last_used_step=NOW_STEP) == MatchedStep(NOW_STEP + 1)
    assert verify(code_at_step(NOW_STEP - 1), last_used_step=NOW_STEP - 2) == MatchedStep(
        NOW_STEP - 1
    )


def test_a_used_code_cannot_be_replayed_with_the_step_it_returned() -> None:
    code = code_at_step(NOW_STEP)
    first = verify(code)
    with pytest.raises(InvalidCode):
        verify(code, last_used_step=first.step)
    # Nor a few seconds later, still inside the drift window.
    with pytest.raises(InvalidCode):
        verify(code, unix_time=NOW + 20, last_used_step=first.step)


# --- input shape -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "28707",  # too short
        "2870711",  # too long
        "abcdef",
        "28707a",
        "2870-1",
        "+28707",
        "-28707",
        "2870.1",
        "0x1234",
        "\u0662\u0668\u0667\u0660\u0667\u0661",  # Arabic-Indic digits: isdigit() but not ASCII
        "\uff12\uff18\uff17\uff10\uff17\uff11",  # full-width digits
        "\u00b2\u00b9\u00b3\u2074\u2075\u2076",  # superscripts
    ],
)
def test_malformed_codes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidCode):
        verify(bad)


def test_right_code_with_the_wrong_length_is_refused() -> None:
    eight = pyotp.TOTP(SHA1_SEED, digits=8).at(NOW)
    six = eight[-6:]
    assert verify(six) == MatchedStep(NOW_STEP)
    with pytest.raises(InvalidCode):
        verify(eight)  # 8 digits where 6 are configured
    with pytest.raises(InvalidCode):
        verify(six, params=TotpParameters(digits=8))
    with pytest.raises(InvalidCode):
        verify(six[1:])


def test_non_ascii_lookalike_of_the_right_code_is_refused() -> None:
    code = code_at_step(NOW_STEP)
    fullwidth = "".join(chr(ord(c) - ord("0") + 0xFF10) for c in code)
    with pytest.raises(InvalidCode):
        verify(fullwidth)

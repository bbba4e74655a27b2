"""Recovery codes (API.md "The signed-in user and their factors"): at least 64 random bits each,
16 characters in groups of four from an alphabet a person cannot misread, accepted in either
case with or without separators, stored only as a stable hash."""

from __future__ import annotations

import hashlib
import math
import re
import string

from cloudmfa.factors.recovery import codes

AMBIGUOUS = set("0O1IL")


def test_alphabet_is_unambiguous_upper_case_alphanumerics() -> None:
    alphabet = codes.ALPHABET
    assert len(set(alphabet)) == len(alphabet), "no symbol twice: that would skew the entropy"
    assert set(alphabet) <= set(string.ascii_uppercase + string.digits)
    assert not set(alphabet) & AMBIGUOUS
    assert len(alphabet) >= 16


def test_entropy_per_code_is_at_least_64_bits() -> None:
    length = codes.GROUPS * codes.GROUP_LENGTH
    assert length == 16
    bits = length * math.log2(len(set(codes.ALPHABET)))
    assert bits >= 64, bits


def test_code_shape() -> None:
    symbol = "[" + re.escape(codes.ALPHABET) + "]"
    shape = re.compile(rf"^{symbol}{{4}}-{symbol}{{4}}-{symbol}{{4}}-{symbol}{{4}}$")
    for _ in range(200):
        code = codes.new_code()
        assert shape.match(code), code
        assert len(code.replace("-", "")) == 16


def test_codes_use_the_whole_alphabet_and_nothing_else() -> None:
    seen: set[str] = set()
    for _ in range(300):
        seen |= set(codes.new_code().replace("-", ""))
    # 4,800 draws from 30 symbols: missing one by chance has probability ~30 * (29/30)^4800.
    assert seen == set(codes.ALPHABET)


def test_a_set_is_ten_distinct_codes() -> None:
    batch = codes.new_set()
    assert len(batch) == codes.CODES_PER_SET == 10
    assert len(set(batch)) == 10
    assert len({codes.hash_code(c) for c in batch}) == 10


def test_sets_differ() -> None:
    assert set(codes.new_set()).isdisjoint(codes.new_set())


def test_normalise_accepts_case_dashes_and_spaces() -> None:
    code = "ABCD-EFGH-JKMN-PQRS"
    canonical = "ABCDEFGHJKMNPQRS"
    for typed in (
        code,
        code.lower(),
        "abcd-EFGH-jkmn-PQRS",
        canonical,
        canonical.lower(),
        "ABCD EFGH JKMN PQRS",
        "abcd efgh jkmn pqrs",
        " ABCD-EFGH-JKMN-PQRS ",
        "ABCD\tEFGH-JKMN PQRS",
        "AB-CD-EF-GH-JK-MN-PQ-RS",
    ):
        assert codes.normalise(typed) == canonical, typed


def test_normalise_keeps_what_matters() -> None:
    assert codes.normalise("ABCD-EFGH-JKMN-PQRS") != codes.normalise("ABCD-EFGH-JKMN-PQRT")
    assert codes.normalise("2345-6789-ABCD-EFGH") == "23456789ABCDEFGH"


def test_hash_is_stable_and_ignores_presentation() -> None:
    code = "ABCD-EFGH-JKMN-PQRS"
    expected = hashlib.sha256(b"ABCDEFGHJKMNPQRS").hexdigest()
    assert codes.hash_code(code) == expected
    assert codes.hash_code(code) == codes.hash_code(code)
    for typed in (code.lower(), "ABCDEFGHJKMNPQRS", "abcd efgh jkmn pqrs"):
        assert codes.hash_code(typed) == expected, typed


def test_hash_of_a_generated_code() -> None:
    code = codes.new_code()
    digest = codes.hash_code(code)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert code not in digest and code.replace("-", "") not in digest
    assert codes.hash_code(code.lower().replace("-", " ")) == digest


def test_different_codes_hash_differently() -> None:
    assert codes.hash_code("ABCD-EFGH-JKMN-PQRS") != codes.hash_code("ABCD-EFGH-JKMN-PQRT")

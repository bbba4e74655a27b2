"""Recovery codes' shape (API.md "The signed-in user and their factors"): at least 64 random
bits each, groups of four from an alphabet a person cannot misread, accepted in either case with
or without separators; the first group finds the code's row."""

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


def test_the_secret_part_alone_carries_at_least_64_bits() -> None:
    # The lookup group is printed in the clear in the database: only the rest counts.
    secret_symbols = codes.CODE_LENGTH - codes.LOOKUP_LENGTH
    assert secret_symbols == 16
    bits = secret_symbols * math.log2(len(set(codes.ALPHABET)))
    assert bits >= 64, bits


def test_code_shape() -> None:
    symbol = "[" + re.escape(codes.ALPHABET) + "]"
    shape = re.compile(rf"^{symbol}{{4}}(-{symbol}{{4}}){{4}}$")
    for code in codes.new_set() + codes.new_set():
        assert shape.match(code), code


def test_codes_use_the_whole_alphabet_and_nothing_else() -> None:
    seen: set[str] = set()
    for _ in range(30):
        for code in codes.new_set():
            seen |= set(code.replace("-", ""))
    # 6,000 draws from 30 symbols: missing one by chance has probability ~30 * (29/30)^6000.
    assert seen == set(codes.ALPHABET)


def test_a_set_is_ten_codes_with_ten_different_lookups() -> None:
    for _ in range(50):
        batch = codes.new_set()
        assert len(batch) == codes.CODES_PER_SET == 10
        lookups = {codes.lookup_of(codes.normalise(c)) for c in batch}
        assert len(lookups) == 10 and None not in lookups


def test_sets_differ() -> None:
    assert set(codes.new_set()).isdisjoint(codes.new_set())


def test_normalise_accepts_case_dashes_and_spaces() -> None:
    canonical = "ABCDEFGHJKMNPQRSTVWX"
    for typed in (
        "ABCD-EFGH-JKMN-PQRS-TVWX",
        "abcd-EFGH-jkmn-PQRS-tvwx",
        canonical,
        canonical.lower(),
        "ABCD EFGH JKMN PQRS TVWX",
        " ABCD-EFGH-JKMN-PQRS-TVWX ",
        "ABCD\tEFGH-JKMN PQRS-TVWX",
    ):
        assert codes.normalise(typed) == canonical, typed


def test_lookup_is_the_first_group_of_a_code_of_the_current_shape() -> None:
    assert codes.lookup_of("ABCDEFGHJKMNPQRSTVWX") == "ABCD"
    assert codes.lookup_of("ABCDEFGHJKMNPQRS") is None  # the old shape has no lookup
    assert codes.lookup_of("ABCDEFGHJKMNPQRSTVWXY") is None
    assert codes.lookup_of("") is None


def test_legacy_hash_is_bare_sha256_of_the_normalised_code() -> None:
    # Only codes issued before salting are checked this way: the old rows hold exactly this.
    assert codes.legacy_hash("ABCDEFGHJKMNPQRS") == hashlib.sha256(b"ABCDEFGHJKMNPQRS").hexdigest()

"""Password hashing: argon2id with the configured parameters, upgrades of outdated and imported
bcrypt hashes, NFKC before hashing, and malformed stored hashes that fail closed."""

from __future__ import annotations

import re
import unicodedata

import bcrypt
import pytest
from argon2.low_level import Type, hash_secret

from cloudmfa.security.passwords import PasswordHashing, VerifyResult, normalise

PASSWORD = "plum-orbit-velvet-canyon-42"
_ARGON2 = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$")


def argon2id_params(encoded: str) -> tuple[int, int, int]:
    """(m, t, p) read from the encoded hash string; fails unless it is argon2id v=19."""
    match = _ARGON2.match(encoded)
    assert match, f"not an argon2id v=19 hash: {encoded[:20]}..."
    m, t, p = (int(g) for g in match.groups())
    return m, t, p


def legacy_bcrypt(secret: bytes, prefix: bytes = b"2b") -> str:
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=4, prefix=prefix)).decode("ascii")


@pytest.fixture(scope="module")
def hashing() -> PasswordHashing:
    return PasswordHashing(time_cost=1, memory_kib=8192, parallelism=1)


# --- hashing ------------------------------------------------------------------------------


def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    hashing = PasswordHashing(time_cost=2, memory_kib=9216, parallelism=2)
    assert argon2id_params(hashing.hash_sync(PASSWORD)) == (9216, 2, 2)


def test_hash_uses_small_test_parameters_when_configured(hashing: PasswordHashing) -> None:
    assert argon2id_params(hashing.hash_sync(PASSWORD)) == (8192, 1, 1)


def test_hash_is_salted_and_does_not_contain_the_password(hashing: PasswordHashing) -> None:
    first, second = hashing.hash_sync(PASSWORD), hashing.hash_sync(PASSWORD)
    assert first != second
    assert PASSWORD not in first


async def test_async_hash_and_verify_run_the_same_algorithm(hashing: PasswordHashing) -> None:
    stored = await hashing.hash(PASSWORD)
    assert argon2id_params(stored) == (8192, 1, 1)
    assert await hashing.verify(stored, PASSWORD) == VerifyResult(ok=True, new_hash=None)
    assert await hashing.verify(stored, PASSWORD + "!") == VerifyResult(ok=False)


# --- verification -------------------------------------------------------------------------


def test_verify_accepts_the_right_password_without_rehash(hashing: PasswordHashing) -> None:
    assert hashing.verify_sync(hashing.hash_sync(PASSWORD), PASSWORD) == VerifyResult(ok=True)


@pytest.mark.parametrize(
    "attempt",
    [
        "plum-orbit-velvet-canyon-43",
        "PLUM-ORBIT-VELVET-CANYON-42",
        "plum-orbit-velvet-canyon-4",
        "",
    ],
)
def test_verify_rejects_a_wrong_password(hashing: PasswordHashing, attempt: str) -> None:
    result = hashing.verify_sync(hashing.hash_sync(PASSWORD), attempt)
    assert result == VerifyResult(ok=False, new_hash=None)


def test_outdated_parameters_are_upgraded_on_successful_verify() -> None:
    old = PasswordHashing(time_cost=1, memory_kib=8192, parallelism=1)
    new = PasswordHashing(time_cost=2, memory_kib=8192, parallelism=1)
    stored = old.hash_sync(PASSWORD)
    assert argon2id_params(stored) == (8192, 1, 1)

    result = new.verify_sync(stored, PASSWORD)

    assert result.ok and result.new_hash is not None
    assert argon2id_params(result.new_hash) == (8192, 2, 1)
    assert new.verify_sync(result.new_hash, PASSWORD) == VerifyResult(ok=True, new_hash=None)


def test_outdated_hash_is_not_upgraded_for_a_wrong_password() -> None:
    old = PasswordHashing(time_cost=1, memory_kib=8192, parallelism=1)
    new = PasswordHashing(time_cost=2, memory_kib=8192, parallelism=1)
    assert new.verify_sync(old.hash_sync(PASSWORD), "not the password") == VerifyResult(ok=False)


@pytest.mark.parametrize("legacy_type", [Type.I, Type.D])
def test_other_argon2_variants_are_upgraded_to_argon2id(
    hashing: PasswordHashing, legacy_type: Type
) -> None:
    stored = hash_secret(
        PASSWORD.encode(),
        b"sixteen-byte-slt",
        time_cost=1,
        memory_cost=8192,
        parallelism=1,
        hash_len=32,
        type=legacy_type,
    ).decode("ascii")
    result = hashing.verify_sync(stored, PASSWORD)
    assert result.ok and result.new_hash is not None
    assert argon2id_params(result.new_hash) == (8192, 1, 1)


# --- imported bcrypt hashes ---------------------------------------------------------------


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
def test_bcrypt_hash_verifies_and_is_upgraded_to_argon2id(
    hashing: PasswordHashing, prefix: bytes
) -> None:
    stored = legacy_bcrypt(PASSWORD.encode(), prefix)
    assert stored.startswith("$" + prefix.decode() + "$")

    result = hashing.verify_sync(stored, PASSWORD)

    assert result.ok and result.new_hash is not None
    assert argon2id_params(result.new_hash) == (8192, 1, 1)
    assert hashing.verify_sync(result.new_hash, PASSWORD) == VerifyResult(ok=True)


def test_bcrypt_2y_hash_from_php_verifies(hashing: PasswordHashing) -> None:
    stored = "$2y$" + legacy_bcrypt(PASSWORD.encode())[4:]  # same algorithm, PHP's spelling
    result = hashing.verify_sync(stored, PASSWORD)
    assert result.ok and result.new_hash is not None


def test_bcrypt_hash_rejects_a_wrong_password_without_upgrade(hashing: PasswordHashing) -> None:
    stored = legacy_bcrypt(PASSWORD.encode())
    assert hashing.verify_sync(stored, "plum-orbit-velvet-canyon-43") == VerifyResult(ok=False)


def test_bcrypt_era_password_longer_than_72_bytes_verifies_and_upgrades_in_full(
    hashing: PasswordHashing,
) -> None:
    # Before bcrypt 5 refused them, long passwords were silently cut to 72 bytes when hashed;
    # "€" is 3 bytes, so the cut falls inside a character.
    password = "correct staples " + "\u20ac" * 30 + " battery horse"
    encoded = password.encode("utf-8")
    assert len(encoded) > 72
    with pytest.raises(UnicodeDecodeError):
        encoded[:72].decode("utf-8")  # the cut splits a character
    stored = legacy_bcrypt(encoded[:72])

    result = hashing.verify_sync(stored, password)

    assert result.ok and result.new_hash is not None
    # The new argon2id hash covers the whole password, not just what bcrypt saw.
    assert hashing.verify_sync(result.new_hash, password) == VerifyResult(ok=True)
    prefix_only = encoded[:70].decode("utf-8")
    assert hashing.verify_sync(result.new_hash, prefix_only).ok is False


def test_bcrypt_hash_of_password_typed_in_a_compatibility_form_still_verifies(
    hashing: PasswordHashing,
) -> None:
    # The old system hashed the bytes as typed, without NFKC.
    typed = "\uff50\uff4c\uff55\uff4d-orbit-\ufb01ve-canyon"  # fullwidth "plum", "fi" ligature
    assert normalise(typed) == "plum-orbit-five-canyon"
    stored = legacy_bcrypt(typed.encode("utf-8"))

    result = hashing.verify_sync(stored, typed)

    assert result.ok and result.new_hash is not None
    # From now on both spellings are one password, as for every argon2id hash.
    assert hashing.verify_sync(result.new_hash, typed).ok
    assert hashing.verify_sync(result.new_hash, "plum-orbit-five-canyon").ok


# --- malformed stored hashes --------------------------------------------------------------


def _malformed(hashing: PasswordHashing) -> list[str]:
    good = hashing.hash_sync(PASSWORD)
    bcrypt_good = legacy_bcrypt(PASSWORD.encode())
    return [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=8192,t=1,p=1$AAAA$BBBB",
        good[:-6],  # truncated digest
        good.replace("$argon2id$", "$argon2x$"),  # unknown variant
        "$argon2id$v=19$m=8192,t=1,p=1$\u00e9\u00e9\u00e9\u00e9$BBBB",  # non-ASCII salt
        "\u00e9" + good,  # non-ASCII before a valid hash
        "$2b$",
        "$2b$12$short",
        bcrypt_good[:-10],  # truncated bcrypt
        "$2b$99$" + bcrypt_good[7:],  # impossible cost
        "$2y$04$" + "\u00e9" * 53,  # non-ASCII bcrypt
        "\x00",
    ]


def test_malformed_stored_hashes_fail_closed_without_raising(hashing: PasswordHashing) -> None:
    for stored in _malformed(hashing):
        assert hashing.verify_sync(stored, PASSWORD) == VerifyResult(ok=False, new_hash=None), repr(
            stored[:30]
        )


async def test_malformed_stored_hash_fails_closed_through_async_verify(
    hashing: PasswordHashing,
) -> None:
    assert await hashing.verify("$argon2id$v=19$m=1,t=1,p=1$\u00e9$x", PASSWORD) == VerifyResult(
        ok=False
    )


# --- NFKC -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hashed, typed",
    [
        ("\ufb01rst-\ufb02oor-o\ufb03ce-key", "first-floor-office-key"),  # ligatures
        ("\uff50\uff4c\uff55\uff4d orbit velvet", "plum orbit velvet"),  # fullwidth
        ("caf\u00e9 orbit velvet", "cafe\u0301 orbit velvet"),  # composed vs decomposed
        ("two\u00b2 and a half\u00bd", "two2 and a half1\u20442"),  # superscript, fraction
    ],
)
def test_nfkc_equivalent_passwords_verify_against_each_other(
    hashing: PasswordHashing, hashed: str, typed: str
) -> None:
    assert hashed != typed and normalise(hashed) == normalise(typed)
    assert unicodedata.is_normalized("NFKC", normalise(hashed))
    assert hashing.verify_sync(hashing.hash_sync(hashed), typed).ok
    assert hashing.verify_sync(hashing.hash_sync(typed), hashed).ok


def test_nfkc_does_not_fold_case(hashing: PasswordHashing) -> None:
    assert not hashing.verify_sync(hashing.hash_sync("Plum Orbit Velvet"), "plum orbit velvet").ok


# --- unknown accounts ---------------------------------------------------------------------


async def test_verify_dummy_pays_one_real_argon2id_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashing = PasswordHashing(time_cost=1, memory_kib=8192, parallelism=1)
    calls: list[tuple[str, VerifyResult]] = []
    real_verify = hashing.verify_sync

    def spy(stored_hash: str, password: str) -> VerifyResult:
        result = real_verify(stored_hash, password)
        calls.append((stored_hash, result))
        return result

    monkeypatch.setattr(hashing, "verify_sync", spy)

    assert await hashing.verify_dummy(PASSWORD) is None

    assert len(calls) == 1
    stored, result = calls[0]
    assert argon2id_params(stored) == (8192, 1, 1)  # same cost as a real account
    assert result == VerifyResult(ok=False)

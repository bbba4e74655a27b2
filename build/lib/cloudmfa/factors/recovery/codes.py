"""Recovery codes (NIST SP 800-63B-4 §3.1.2, look-up secrets): their shape, generation and
normalisation.

A code is five groups of four symbols. The first group is its *lookup*: it finds the code's
row, so a redemption checks one salted hash instead of every code of the user. The other four
groups, 16 symbols (~78.5 bits), are the secret part; the whole code is stored under argon2id,
as §3.1.2 asks of look-up secrets below 112 bits.
"""

from __future__ import annotations

import hashlib
import secrets

# No 0/O, 1/I/L, U: nothing a person can misread or mistype. 30 symbols, ~4.9 bits each.
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
GROUP_LENGTH = 4
LOOKUP_GROUPS, SECRET_GROUPS = 1, 4
CODE_LENGTH = (LOOKUP_GROUPS + SECRET_GROUPS) * GROUP_LENGTH
LOOKUP_LENGTH = LOOKUP_GROUPS * GROUP_LENGTH
CODES_PER_SET = 10
# Codes issued before codes were salted: four groups, no lookup, stored as bare SHA-256.
LEGACY_CODE_LENGTH = 16


def _symbols(count: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(count))


def _grouped(chars: str) -> str:
    return "-".join(chars[i : i + GROUP_LENGTH] for i in range(0, len(chars), GROUP_LENGTH))


def new_set() -> list[str]:
    """Ten codes whose lookups differ, so each finds exactly one row of the set."""
    codes: list[str] = []
    lookups: set[str] = set()
    while len(codes) < CODES_PER_SET:
        chars = _symbols(CODE_LENGTH)
        if chars[:LOOKUP_LENGTH] in lookups:
            continue
        lookups.add(chars[:LOOKUP_LENGTH])
        codes.append(_grouped(chars))
    return codes


def normalise(code: str) -> str:
    """Accept any case, with or without the group separators or spaces."""
    return "".join(ch for ch in code.upper() if ch not in "- \t")


def lookup_of(normalised: str) -> str | None:
    """The lookup of a normalised code of the current shape, else None."""
    if len(normalised) != CODE_LENGTH:
        return None
    return normalised[:LOOKUP_LENGTH]


def legacy_hash(normalised: str) -> str:
    """How codes of the old shape were stored (bare SHA-256): only for redeeming those."""
    return hashlib.sha256(normalised.encode("utf-8", "surrogatepass")).hexdigest()

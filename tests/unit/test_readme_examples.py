"""The README and the docs match the code: every password their examples sign up, log in or
create an administrator with passes the policy the tour runs under (the `optional` MFA policy,
whose minimum length is the stricter one), and the configuration table of docs/operations.md
names every setting, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudmfa.config import Settings
from cloudmfa.security.password_policy import PasswordPolicy

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}
OPERATIONS = DOCS["operations.md"]
EXAMPLE_TEXT = "\n".join([README, *DOCS.values()])
JSON_CREDENTIALS = re.compile(r'"email": "([^"]+)", "password": "([^"]+)"')
CREATE_ADMIN = re.compile(r"echo '([^']+)' \| \S*cloudmfa create-admin (\S+)")

EXAMPLES = sorted(
    {
        *JSON_CREDENTIALS.findall(EXAMPLE_TEXT),
        *((e, p) for p, e in CREATE_ADMIN.findall(EXAMPLE_TEXT)),
    }
)


def test_the_readme_has_examples_to_check() -> None:
    emails = {email for email, _ in EXAMPLES}
    assert {"ada@example.com", "admin@example.com"} <= emails


@pytest.mark.parametrize(("email", "password"), EXAMPLES)
def test_readme_password_passes_the_policy(email: str, password: str) -> None:
    settings = Settings(_env_file=None, mfa_policy="optional")
    policy = PasswordPolicy(
        min_length=settings.effective_password_min_length,
        max_length=settings.password_max_length,
    )
    policy.check(password, email=email)


def _documented_settings() -> set[str]:
    """The variables named in the configuration table of docs/operations.md. A row may name several:
    `CLOUDMFA_TOTP_ALGORITHM`, `_DIGITS`, `_PERIOD`, the others sharing the first one's group
    (CLOUDMFA_TOTP)."""
    names: set[str] = set()
    for cell in re.findall(r"^\| (`CLOUDMFA_[^|]+) \|", OPERATIONS, re.M):
        first, *suffixes = re.findall(r"`([A-Z0-9_]+)`", cell)
        group = "_".join(first.split("_")[:2])
        names.update([first, *(group + suffix for suffix in suffixes)])
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    expected = {"CLOUDMFA_" + name.upper() for name in Settings.model_fields}
    documented = _documented_settings()
    assert expected - documented == set()
    assert documented - expected == set()

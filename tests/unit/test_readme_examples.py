"""The README's examples must work as written: every password it signs up, logs in or creates
an administrator with passes the password policy the tour runs under (the `optional` MFA policy,
whose minimum length is the stricter one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudmfa.config import Settings
from cloudmfa.security.password_policy import PasswordPolicy

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
JSON_CREDENTIALS = re.compile(r'"email": "([^"]+)", "password": "([^"]+)"')
CREATE_ADMIN = re.compile(r"echo '([^']+)' \| \S*cloudmfa create-admin (\S+)")

EXAMPLES = sorted(
    {*JSON_CREDENTIALS.findall(README), *((e, p) for p, e in CREATE_ADMIN.findall(README))}
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

"""The edge's settings refuse what would silently widen trust: a CORS origin with a wildcard
or a path, a proxy entry that is not an address or network."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloudmfa.config import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_trusted_proxies_take_addresses_and_networks() -> None:
    value = settings(trusted_proxies=" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32").trusted_proxies
    assert value == "10.0.0.0/8,192.0.2.7,2001:db8::/32"


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "proxy.example.com", "10.0.0.0/33", "*"])
def test_trusted_proxies_refuse_anything_else(bad: str) -> None:
    with pytest.raises(ValidationError, match="CIDR"):
        settings(trusted_proxies=bad)


def test_cors_origins_are_exact_origins() -> None:
    origins = settings(cors_origins="https://app.example.com, http://localhost:5173").cors_origins
    assert origins == ("https://app.example.com", "http://localhost:5173")
    assert settings().cors_origins == ()


@pytest.mark.parametrize(
    "bad",
    [
        "*",
        "https://*.example.com",
        "https://app.example.com/",
        "app.example.com",
        "https://app.example.com/path",
        "ftp://app.example.com",
    ],
)
def test_cors_origins_refuse_wildcards_and_paths(bad: str) -> None:
    with pytest.raises(ValidationError, match="origin"):
        settings(cors_origins=bad)


@pytest.mark.parametrize(
    ("public_url", "secure"),
    [
        ("http://localhost:8000", False),
        ("http://localhost", False),
        ("https://localhost", True),
        ("http://127.0.0.1:8000", True),
        ("https://auth.example.com", True),
        ("http://localhost.example.com", True),
    ],
)
def test_cookies_are_secure_but_on_plain_http_localhost(public_url: str, secure: bool) -> None:
    assert settings(public_url=public_url).secure_cookies is secure

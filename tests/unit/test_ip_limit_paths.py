"""Which paths the per-IP limit covers (API.md "Throttling": /auth/* and /accounts)."""

from __future__ import annotations

import pytest

from cloudmfa.api.ip_limit import LIMITED


def covered(path: str) -> bool:
    return any(p.covers(path) for p in LIMITED)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/auth/login", "/api/v1/auth/verify", "/api/v1/auth/anything/else", "/api/v1/accounts"],
)
def test_covered(path: str) -> None:
    assert covered(path)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/me", "/api/v1/auth", "/api/v1/authx/login", "/api/v1/accountsx", "/healthz", "/"],
)
def test_not_covered(path: str) -> None:
    assert not covered(path)

"""Which paths the per-IP limit covers (API.md "Throttling": /auth/* and /accounts)."""

from __future__ import annotations

import pytest

from cloudmfa.api.ip_limit import LIMITED, limited_path


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


def _scope(method: str, path: str, *headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "headers": list(headers)}


def test_a_cors_preflight_is_not_counted() -> None:
    asks = (b"access-control-request-method", b"POST")
    assert limited_path(_scope("OPTIONS", "/api/v1/auth/login", asks)) is None


@pytest.mark.parametrize(
    "scope",
    [
        _scope("OPTIONS", "/api/v1/auth/login"),  # OPTIONS, but no preflight
        _scope("GET", "/api/v1/auth/login", (b"access-control-request-method", b"POST")),
        _scope("POST", "/api/v1/accounts"),
    ],
)
def test_every_other_request_is_counted(scope: dict[str, object]) -> None:
    assert limited_path(scope) is not None

"""Passwords that contain the service's name or the configured issuer name are weak (API.md
"Accounts", password policy): at sign-up, at a password change and for create-admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from cloudmfa.errors import WeakPassword
from cloudmfa.flows.accounts import create_admin
from conftest import ALL_BACKENDS, PASSWORD, Api, start_api
from conftest import test_settings as make_settings
from support import assert_problem

BACKENDS = ALL_BACKENDS  # MariaDB too (tests/conftest.py)

ISSUER = "Globex Widgets"


@pytest_asyncio.fixture(scope="module")
async def issuer_api(backend: dict[str, Any]) -> AsyncIterator[Api]:
    app, api = await start_api(make_settings(backend, issuer=ISSUER))
    async with app.router.lifespan_context(app):
        async with api.client:
            yield api


@pytest.mark.parametrize(
    "password",
    [
        "my-cloudmfa-password-2024",
        "My-CloudMFA-Password-2024",
        "my-\uff23\uff4c\uff4f\uff55\uff44\uff2d\uff26\uff21-pass-2024",  # fullwidth: NFKC
        "harbour-GLOBEX WIDGETS-lemon-7",
        "harbour-globex widgets-lemon-7",
    ],
)
async def test_sign_up_refuses_a_password_containing_the_service_or_issuer_name(
    issuer_api: Api, password: str
) -> None:
    r = await issuer_api.client.post(
        "/api/v1/accounts", json={"email": issuer_api.new_email(), "password": password}
    )

    body = assert_problem(r, 422, "weak_password")
    assert password not in r.text
    assert "name" in body["detail"]


async def test_a_password_change_to_one_containing_the_issuer_name_is_weak(
    issuer_api: Api,
) -> None:
    _, headers = await issuer_api.signed_in("changer")

    r = await issuer_api.client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "new-globex widgets-pass-1"},
        headers=headers,
    )

    assert_problem(r, 422, "weak_password")


async def test_create_admin_refuses_a_password_containing_the_service_name(
    issuer_api: Api,
) -> None:
    with pytest.raises(WeakPassword):
        await create_admin(
            issuer_api.svc, email=issuer_api.new_email("admin"), password="cloudmfa-admin-7788"
        )


async def test_words_of_the_issuer_name_alone_are_allowed(issuer_api: Api) -> None:
    r = await issuer_api.client.post(
        "/api/v1/accounts",
        json={"email": issuer_api.new_email(), "password": "globex-lemon-widgets-harbour"},
    )
    assert r.status_code == 201, r.text

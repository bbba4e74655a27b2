"""Browser sessions (API.md "Browser sessions"): the refresh token and a remembered device as
`HttpOnly` cookies instead of in the body, and the CSRF check of the calls those cookies
authenticate.

Every token answer goes through `TokenDelivery.answer` (a dependency: `DeliveryDep`), so an
endpoint that signs someone in gets the cookie form by using it, with nothing of its own. A
request asks for cookies with `X-CloudMFA-Session: cookie`; without it nothing here changes
the answer (Bearer clients are unaffected).

The CSRF defence is a double submit: `cloudmfa_csrf` is readable by the page, which copies it
into `X-CSRF-Token`. A page of another origin can neither read the cookie nor send a custom
header without a CORS preflight this service refuses (api/edge.py); the cookies are also
`SameSite=Strict`, so a cross-site request does not carry them at all.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response

from cloudmfa.api.schemas import TokenResponse
from cloudmfa.config import Settings
from cloudmfa.errors import CsrfFailed, InvalidToken

SESSION_HEADER = "x-cloudmfa-session"
CSRF_HEADER = "x-csrf-token"
REFRESH_COOKIE = "cloudmfa_refresh"
CSRF_COOKIE = "cloudmfa_csrf"
DEVICE_COOKIE = "cloudmfa_device"
AUTH_PATH = "/api/v1/auth"  # the refresh and device cookies go only to these endpoints

# The cookie form of refresh and logout in the OpenAPI document: the refresh cookie together
# with its CSRF header.
COOKIE_SECURITY: dict[str, list[str]] = {"refreshCookie": [], "csrfHeader": []}
COOKIE_SCHEMES = {
    "refreshCookie": {"type": "apiKey", "in": "cookie", "name": REFRESH_COOKIE},
    "csrfHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": f"The value of the {CSRF_COOKIE} cookie.",
    },
}


def wants_cookies(request: Request) -> bool:
    return request.headers.get(SESSION_HEADER, "").strip().lower() == "cookie"


class TokenDelivery:
    """How this request's tokens go back: in the JSON body, or (asked for with
    `X-CloudMFA-Session: cookie`) as cookies set on ``response``."""

    def __init__(self, request: Request, response: Response, settings: Settings) -> None:
        self.request = request
        self.response = response
        self.settings = settings
        self.cookies = wants_cookies(request)

    def answer(self, tokens: TokenResponse, *, cookies: bool = False) -> TokenResponse:
        """``tokens`` as this client takes them: unchanged, or without `refresh_token` and
        `device_token`, which become cookies (``cookies`` forces that form: a refresh made
        with the cookie never hands the token to script)."""
        if not (self.cookies or cookies) or tokens.refresh_token is None:
            return tokens
        session_s = int(self.settings.session_max_hours * 3600)
        self._set(REFRESH_COOKIE, tokens.refresh_token, path=AUTH_PATH, max_age=session_s)
        # A fresh CSRF value with each refresh token: one read from an old page stops working
        # once the session it belonged to has moved on.
        self._set(
            CSRF_COOKIE, secrets.token_urlsafe(32), path="/", max_age=session_s, http_only=False
        )
        if tokens.device_token is not None:
            device_s = self.settings.remember_device_days * 86400
            self._set(DEVICE_COOKIE, tokens.device_token, path=AUTH_PATH, max_age=device_s)
        # The body keeps its shape but for the two tokens (response_model_exclude_none).
        return tokens.model_copy(update={"refresh_token": None, "device_token": None})

    def device_token(self, sent: str | None) -> str | None:
        """The remembered device a login presents: the body's, else the browser's cookie."""
        return sent if sent is not None else self.request.cookies.get(DEVICE_COOKIE) or None

    def refresh_token_from_cookie(self) -> str:
        """The `cloudmfa_refresh` cookie of a call made with it, once its `X-CSRF-Token` has
        been checked against `cloudmfa_csrf`."""
        token = self.request.cookies.get(REFRESH_COOKIE)
        if not token:
            raise InvalidToken(
                "Send the refresh token in the body, or sign in with "
                "'X-CloudMFA-Session: cookie' to use the cookie."
            )
        expected = self.request.cookies.get(CSRF_COOKIE, "")
        sent = self.request.headers.get(CSRF_HEADER, "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise CsrfFailed("Send the cloudmfa_csrf cookie's value as X-CSRF-Token.")
        return token

    def clear(self, response: Response) -> None:
        """Logout: the browser forgets the session's cookies (not a remembered device, which
        outlives sessions by design; /me/devices forgets it)."""
        for name, path in ((REFRESH_COOKIE, AUTH_PATH), (CSRF_COOKIE, "/")):
            response.delete_cookie(
                name,
                path=path,
                secure=self.settings.secure_cookies,
                httponly=name != CSRF_COOKIE,
                samesite="strict",
            )

    def _set(
        self, name: str, value: str, *, path: str, max_age: int, http_only: bool = True
    ) -> None:
        self.response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            secure=self.settings.secure_cookies,
            httponly=http_only,
            samesite="strict",
        )


async def token_delivery(request: Request, response: Response) -> TokenDelivery:
    return TokenDelivery(request, response, request.app.state.services.settings)


DeliveryDep = Annotated[TokenDelivery, Depends(token_delivery)]

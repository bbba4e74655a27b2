"""The exception hierarchy. Each class carries its stable API ``code`` and HTTP status;
one handler at the edge (``api/problems.py``) turns them into RFC 9457 problem details."""

from __future__ import annotations

from typing import ClassVar


class CloudMFAError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.retry_after = retry_after


class ValidationFailed(CloudMFAError):
    code, status, title = "validation_error", 422, "The request is not valid"


class WeakPassword(CloudMFAError):
    code, status, title = "weak_password", 422, "The password does not meet the policy"


class BreachedPassword(CloudMFAError):
    code, status, title = "breached_password", 422, "The password is too common"


class EmailTaken(CloudMFAError):
    code, status, title = "email_taken", 409, "An account with this email already exists"


class InvalidCredentials(CloudMFAError):
    code, status, title = "invalid_credentials", 401, "Email or password is wrong"


class InvalidCode(CloudMFAError):
    code, status, title = "invalid_code", 401, "The code is not valid"


class InvalidToken(CloudMFAError):
    code, status, title = "invalid_token", 401, "The token is not valid"


class MfaTokenExpired(CloudMFAError):
    code, status, title = "mfa_token_expired", 401, "The sign-in attempt has expired"


class AccountLocked(CloudMFAError):
    code, status, title = "account_locked", 403, "The account is locked"


class ReauthenticationRequired(CloudMFAError):
    code, status, title = (
        "reauthentication_required",
        403,
        "Sign in again to do this",
    )


class MfaEnrollmentRequired(CloudMFAError):
    code, status, title = (
        "mfa_enrollment_required",
        403,
        "Set up a second factor first",
    )


class Forbidden(CloudMFAError):
    code, status, title = "forbidden", 403, "Not allowed"


class NotFound(CloudMFAError):
    code, status, title = "not_found", 404, "Not found"


class RateLimited(CloudMFAError):
    code, status, title = "rate_limited", 429, "Too many requests"


class DeliveryFailed(CloudMFAError):
    code, status, title = "delivery_failed", 502, "The message could not be sent"


class Unavailable(CloudMFAError):
    code, status, title = "unavailable", 503, "The service is not available"

"""The exception hierarchy. Each class carries its stable API ``code``, HTTP status and title;
this module is the only place that names them. The edge (``api/problems.py``) turns any of
them into an RFC 9457 problem, and maps the web framework's own errors onto them here
(``for_http_status``), so every answer's ``code`` is one of ``error_codes()``."""

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


class InternalError(CloudMFAError):
    """A bug: the answer says nothing of it (no trace, no SQL, no secret)."""

    code, status, title = "internal_error", 500, "Internal error"


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


class MethodNotAllowed(CloudMFAError):
    code, status, title = "method_not_allowed", 405, "Method not allowed"


class PayloadTooLarge(CloudMFAError):
    code, status, title = "payload_too_large", 413, "The request body is too large"


class RateLimited(CloudMFAError):
    code, status, title = "rate_limited", 429, "Too many requests"


class DeliveryFailed(CloudMFAError):
    code, status, title = "delivery_failed", 502, "The message could not be sent"


class Unavailable(CloudMFAError):
    code, status, title = "unavailable", 503, "The service is not available"


def error_classes() -> list[type[CloudMFAError]]:
    """Every error the API can answer with, the root (an unexpected CloudMFAError) included."""
    found: list[type[CloudMFAError]] = []
    pending: list[type[CloudMFAError]] = [CloudMFAError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def error_codes() -> list[str]:
    """The stable `code`s of every problem the API answers, sorted, each once."""
    return sorted({cls.code for cls in error_classes()})


# The errors the web framework raises itself, by HTTP status: an unknown route, a method the
# route does not have, a body over the limit. An unparseable body (400) is a validation error
# like any other malformed input; so is any other client error the framework may raise.
_FRAMEWORK_ERRORS: dict[int, type[CloudMFAError]] = {
    401: InvalidToken,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def for_http_status(status: int) -> type[CloudMFAError]:
    if status >= 500:
        return InternalError
    return _FRAMEWORK_ERRORS.get(status, ValidationFailed)

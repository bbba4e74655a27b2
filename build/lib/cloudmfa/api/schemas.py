"""Request and response shapes shared by several routers."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from cloudmfa.config import ALL_FACTOR_TYPES
from cloudmfa.errors import NotFound, ValidationFailed, error_classes, error_codes
from cloudmfa.factors.base import StoredFactor
from cloudmfa.flows.sessions import TokenSet


def _clean_text(value: str) -> str:
    # NUL cannot be stored by PostgreSQL and lone surrogates cannot be encoded as UTF-8;
    # refusing them here keeps odd input a 422 instead of a failure deep in a driver.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


CleanStr = Annotated[str, AfterValidator(_clean_text)]
Password = Annotated[CleanStr, Field(min_length=1, max_length=1024)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class TokenResponse(BaseModel):
    status: Literal["authenticated"] = "authenticated"
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name)
    expires_in: int
    refresh_token: str
    session_id: str
    mfa_enrollment_required: bool | None = None
    mfa_enrollment_deadline: datetime | None = None
    device_token: str | None = None  # with "remember_device": true on /auth/verify

    @classmethod
    def of(cls, tokens: TokenSet, **extra: Any) -> TokenResponse:
        return cls(
            access_token=tokens.access_token,
            expires_in=tokens.expires_in,
            refresh_token=tokens.refresh_token,
            session_id=tokens.session_id,
            **extra,
        )


def _documented_enum(values: tuple[str, ...]) -> WithJsonSchema:
    """Shown as an enum in the OpenAPI document, not checked here: which factor types exist is
    the factor registry's business (it answers 422 for a type it does not offer), and an
    answer shows what is stored."""
    return WithJsonSchema({"type": "string", "enum": list(values)})


FactorType = Annotated[str, _documented_enum(ALL_FACTOR_TYPES)]
# Recovery codes are not enrolled: they come with the first factor (POST /me/recovery-codes).
EnrollableFactorType = Annotated[
    CleanStr,
    Field(min_length=1, max_length=16),
    _documented_enum(tuple(t for t in ALL_FACTOR_TYPES if t != "recovery")),
]
FactorStatus = Annotated[str, _documented_enum(("pending", "active"))]


class Factor(BaseModel):
    """One of a user's second factors, as its owner and administrators see it: never a secret."""

    id: str
    type: FactorType
    label: str | None
    status: FactorStatus
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, factor: StoredFactor) -> Factor:
        return cls(
            id=factor.id,
            type=factor.type,
            label=factor.label,
            status=factor.status,
            created_at=factor.created_at,
            last_used_at=factor.last_used_at,
        )


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error (`application/problem+json`)."""

    type: str = Field(examples=["urn:cloudmfa:problem:invalid_credentials"])
    title: str = Field(examples=["Email or password is wrong"])
    status: int = Field(examples=[401])
    detail: str = Field(examples=["The email or the password is wrong."])
    code: Annotated[str, Field(json_schema_extra={"enum": error_codes()})]


def problem_description(status: int) -> str:
    """What an error response of this status is, for the OpenAPI document."""
    codes = sorted({cls.code for cls in error_classes() if cls.status == status})
    return f"A problem (RFC 9457); its code is one of: {', '.join(codes) or 'internal_error'}"


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer with (api/openapi.py gives each its
    Problem schema under application/problem+json)."""
    return {status: {"description": problem_description(status)} for status in statuses}


def parse_id(value: str) -> str:
    """Ids are UUIDs; anything else cannot name an existing object."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound("Not found.") from None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: type) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise ValidationFailed("The cursor is not valid.") from None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValidationFailed("The cursor is not valid.")
    # A forged cursor must not reach the database as a value it cannot bind: an integer beyond
    # the 64-bit column range, or text with NUL or lone surrogates.
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise ValidationFailed("The cursor is not valid.")
    if isinstance(value, str):
        try:
            _clean_text(value)
        except ValueError:
            raise ValidationFailed("The cursor is not valid.") from None
    return value


Limit = Annotated[int, Field(ge=1, le=200)]

"""Starting a TOTP enrolment: a fresh secret, its otpauth:// URI and the QR code of that URI."""

from __future__ import annotations

import io
from urllib.parse import quote, urlencode

import pyotp
import segno

from cloudmfa.factors.totp.verify import TotpParameters

SECRET_BYTES = 20  # 160 bits, RFC 4226 §4's recommended length for the SHA-1 key


def new_secret() -> str:
    """Base32, no padding: 160 random bits are exactly 32 characters."""
    return pyotp.random_base32(length=SECRET_BYTES * 8 // 5)


def otpauth_uri(*, secret: str, issuer: str, account: str, params: TotpParameters) -> str:
    """The Key Uri Format authenticator apps read: otpauth://totp/ISSUER:ACCOUNT?..."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": params.algorithm,
            "digits": params.digits,
            "period": params.period,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def qr_svg(uri: str) -> str:
    out = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(out, kind="svg", scale=4, xmldecl=False)
    return out.getvalue().decode("utf-8")

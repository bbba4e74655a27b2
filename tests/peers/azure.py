"""Azure Communication Services' SMS and email REST APIs over HTTPS, as the official SDKs call
them, checking each request's HMAC-SHA256 signature as the service does:

    Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<b64>

over ``"<VERB>\\n<path and query>\\n<x-ms-date>;<host>;<x-ms-content-sha256>"`` under the
base64-decoded access key, with ``x-ms-content-sha256`` the base64 SHA-256 of the body and the
date within 15 minutes. SMS: ``POST /sms?api-version=…`` answers 202 with a result per recipient.
Email: ``POST /emails:send?api-version=…`` answers 202 with the operation (``Operation-Id`` is
the caller's, when given)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from email.utils import parsedate_to_datetime

from peers.http import Answer, HttpPeer, Received, json_answer

SIGNATURE = re.compile(
    r"^HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=(?P<sig>\S+)$"
)
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
CLOCK_SKEW_S = 15 * 60


def azure_error(status: int, code: str, message: str) -> Answer:
    return json_answer(status, {"error": {"code": code, "message": message}})


class AzureCommunicationServer(HttpPeer):
    def __init__(self, tls: object, *, access_key: bytes, sms_from: str, email_from: str) -> None:
        super().__init__(tls)  # type: ignore[arg-type]
        self.access_key = access_key
        self.sms_from = sms_from
        self.email_from = email_from

    @property
    def connection_string(self) -> str:
        key = base64.b64encode(self.access_key).decode()
        return f"endpoint={self.url}/;accesskey={key}"

    def signed(self, request: Received) -> bool:
        given = SIGNATURE.match(request.headers.get("authorization", ""))
        date = request.headers.get("x-ms-date", "")
        content_hash = base64.b64encode(hashlib.sha256(request.body).digest()).decode()
        if given is None or request.headers.get("x-ms-content-sha256") != content_hash:
            return False
        try:
            skew = abs(time.time() - parsedate_to_datetime(date).timestamp())
        except (TypeError, ValueError):
            return False
        if skew > CLOCK_SKEW_S:
            return False
        to_sign = (
            f"{request.method}\n{request.path}\n{date};{request.headers['host']};{content_hash}"
        )
        expected = hmac.new(self.access_key, to_sign.encode(), hashlib.sha256).digest()
        return hmac.compare_digest(base64.b64encode(expected).decode(), given["sig"])

    def answer(self, request: Received) -> Answer:
        if not self.signed(request):
            return azure_error(401, "Denied", "Denied by the resource provider.")
        if request.method == "POST" and request.route == "/sms":
            return self._sms(request)
        if request.method == "POST" and request.route == "/emails:send":
            return self._email(request)
        return azure_error(404, "NotFound", "Resource not found")

    def _sms(self, request: Received) -> Answer:
        payload = request.json()
        if payload.get("from") != self.sms_from:
            return azure_error(401, "Unauthorized", "The From number is not of this resource.")
        results = []
        for recipient in payload.get("smsRecipients", []):
            to = recipient.get("to", "")
            if E164.match(to):
                results.append(
                    {
                        "to": to,
                        "messageId": f"Outgoing_{uuid.uuid4().hex}_noam",
                        "httpStatusCode": 202,
                        "successful": True,
                    }
                )
            else:
                results.append(
                    {
                        "to": to,
                        "httpStatusCode": 400,
                        "successful": False,
                        "errorMessage": "Invalid To phone number format.",
                    }
                )
        request.extra["kind"] = "sms"
        return json_answer(202, {"value": results})

    def _email(self, request: Received) -> Answer:
        payload = request.json()
        if payload.get("senderAddress") != self.email_from:
            return azure_error(
                400, "InvalidSenderUserName", "The sender address is not of a verified domain."
            )
        operation = request.headers.get("operation-id") or str(uuid.uuid4())
        request.extra["kind"] = "email"
        return json_answer(
            202,
            {"id": operation, "status": "Running"},
            {
                "Operation-Location": f"{self.url}/emails/operations/{operation}"
                "?api-version=2023-03-31",
                "Retry-After": "1",
                "x-ms-request-id": secrets.token_hex(8),
            },
        )

    def sent(self, kind: str) -> list[dict[str, object]]:
        return [r.json() for r in self.received if r.extra.get("kind") == kind]

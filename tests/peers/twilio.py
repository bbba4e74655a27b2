"""Twilio's Messages API as the real one speaks it: a form-encoded POST to
``/2010-04-01/Accounts/{AccountSid}/Messages.json`` with Basic auth (the account sid and auth
token), a 201 JSON message resource, and errors as ``{"code", "message", "more_info",
"status"}`` with Twilio's codes (20003 authentication, 21211 invalid To, 21606 bad From)."""

from __future__ import annotations

import base64
import re
import secrets
from email.utils import formatdate
from urllib.parse import parse_qs

from peers.http import Answer, HttpPeer, Received, json_answer

ROUTE = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-f]{32})/Messages\.json$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def twilio_error(status: int, code: int, message: str) -> Answer:
    return json_answer(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


class TwilioServer(HttpPeer):
    def __init__(self, account_sid: str, auth_token: str, from_number: str) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number

    def answer(self, request: Received) -> Answer:
        match = ROUTE.match(request.route)
        if request.method != "POST" or match is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if (
            request.headers.get("authorization") != f"Basic {expected}"
            or match["sid"] != self.account_sid
        ):
            return twilio_error(401, 20003, "Authenticate")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return twilio_error(400, 20001, "Unsupported content type")
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        request.extra["form"] = form
        to, body = form.get("To", ""), form.get("Body", "")
        sender = form.get("From") or form.get("MessagingServiceSid")
        if not E164.match(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if form.get("From") and form["From"] != self.from_number:
            return twilio_error(
                400, 21606, f"The From phone number {form['From']} is not a valid number."
            )
        if not sender or not body:
            return twilio_error(400, 21602, "Message body is required.")
        sid = "SM" + secrets.token_hex(16)
        return json_answer(
            201,
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "status": "queued",
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": body,
                "num_segments": "1",
                "direction": "outbound-api",
                "date_created": formatdate(usegmt=True),
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
        )

    @property
    def messages(self) -> list[dict[str, str]]:
        return [r.extra["form"] for r in self.received]

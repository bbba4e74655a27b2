"""The moto server as the AWS endpoint of SES and SNS: a real HTTP server on 127.0.0.1 that speaks
the AWS APIs, and what it recorded as sent (``/moto-api/data.json``)."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


class MotoServer:
    """Set the test credentials (``CREDENTIALS``) in the environment before using its clients."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def start(self) -> MotoServer:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def data(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=10) as answer:  # noqa: S310
            return dict(json.load(answer))

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310

    def sent_emails(self) -> list[dict[str, Any]]:
        """What SES recorded, a dict per message: source, destinations, subject, body (the HTML
        part when there is one)."""
        return list(self.data().get("ses", {}).get("Message", []))

    def sent_sms(self) -> list[dict[str, Any]]:
        """What SNS recorded, a dict per SMS: phone_number, message, message_id."""
        return list(self.data().get("sns", {}).get("SMS", []))

    def client(self, service: str) -> Any:
        import boto3

        env = {**CREDENTIALS, **{k: v for k, v in os.environ.items() if k in CREDENTIALS}}
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

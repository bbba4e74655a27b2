"""Email through Amazon SES (the SESv2 ``SendEmail`` API, boto3).

SES takes no idempotency key for ``SendEmail``; the outbox retries only what SES did not
acknowledge.
"""

from __future__ import annotations

from cloudmfa.delivery.aws import AwsCaller, refusal
from cloudmfa.delivery.base import Message, Receipt


class SesProvider:
    name = "aws-ses"

    def __init__(
        self,
        *,
        sender: str,
        region: str | None,
        endpoint_url: str | None = None,
        configuration_set: str | None = None,
        timeout_s: float = 10,
        ca_file: str | None = None,
    ) -> None:
        self.sender = sender
        self.configuration_set = configuration_set
        self._aws = AwsCaller(
            "sesv2",
            region=region,
            endpoint_url=endpoint_url,
            timeout_s=timeout_s,
            ca_file=ca_file,
        )

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        body = {"Text": {"Data": message.text, "Charset": "UTF-8"}}
        if message.html is not None:
            body["Html"] = {"Data": message.html, "Charset": "UTF-8"}
        request = {
            "FromEmailAddress": self.sender,
            "Destination": {"ToAddresses": [message.to]},
            "Content": {
                "Simple": {"Subject": {"Data": message.subject, "Charset": "UTF-8"}, "Body": body}
            },
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        try:
            answer = await self._aws.call(self._aws.client.send_email, **request)
        except Exception as exc:  # botocore's errors share no base class worth naming
            raise refusal(self.name, exc, message) from None
        return Receipt(self.name, answer.get("MessageId"))

    async def aclose(self) -> None:
        self._aws.close()

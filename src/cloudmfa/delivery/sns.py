"""SMS through Amazon SNS: ``Publish`` straight to a phone number (boto3), as a transactional
message (the type for codes: delivered for reliability over cost).

SNS takes no idempotency key for SMS (``MessageDeduplicationId`` belongs to FIFO topics); the
outbox retries only what SNS did not acknowledge.
"""

from __future__ import annotations

from typing import Any

from cloudmfa.delivery.aws import AwsCaller, refusal
from cloudmfa.delivery.base import Message, Receipt


class SnsProvider:
    name = "aws-sns"

    def __init__(
        self,
        *,
        region: str | None,
        endpoint_url: str | None = None,
        sender_id: str | None = None,
        timeout_s: float = 10,
        ca_file: str | None = None,
    ) -> None:
        self._attributes: dict[str, Any] = {
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
        }
        if sender_id:
            self._attributes["AWS.SNS.SMS.SenderID"] = {
                "DataType": "String",
                "StringValue": sender_id,
            }
        self._aws = AwsCaller(
            "sns", region=region, endpoint_url=endpoint_url, timeout_s=timeout_s, ca_file=ca_file
        )

    async def send(self, message: Message, *, idempotency_key: str) -> Receipt:
        try:
            answer = await self._aws.call(
                self._aws.client.publish,
                PhoneNumber=message.to,
                Message=message.text,
                MessageAttributes=self._attributes,
            )
        except Exception as exc:  # botocore's errors share no base class worth naming
            raise refusal(self.name, exc, message) from None
        return Receipt(self.name, answer.get("MessageId"))

    async def aclose(self) -> None:
        self._aws.close()

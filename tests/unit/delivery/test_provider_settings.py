"""Each provider's settings: a configured provider missing one stops the service at start with
the variable named; the chains are built in the order given; a provider's SDK is loaded only
when it is configured."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from cloudmfa.config import Settings
from cloudmfa.delivery.providers import build_providers

AZURE = "endpoint=https://acme.communication.azure.com/;accesskey=" + "QUJD" * 11


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"email_provider": "smtp", "email_from": "a@b.c"}, "CLOUDMFA_SMTP_HOST"),
        ({"email_provider": "smtp", "smtp_host": "relay"}, "CLOUDMFA_EMAIL_FROM"),
        ({"email_provider": "aws-ses"}, "CLOUDMFA_EMAIL_FROM"),
        ({"email_provider": "azure", "email_from": "a@b.c"}, "CLOUDMFA_AZURE_COMMUNICATION"),
        (
            {"sms_provider": "azure", "azure_communication_connection_string": AZURE},
            "CLOUDMFA_AZURE_SMS_FROM",
        ),
        ({"sms_provider": "webhook"}, "CLOUDMFA_SMS_WEBHOOK_URL"),
        (
            {"sms_provider": "twilio", "twilio_account_sid": "AC1", "twilio_auth_token": "t"},
            "CLOUDMFA_TWILIO_MESSAGING_SERVICE_SID or CLOUDMFA_TWILIO_FROM_NUMBER",
        ),
        (
            {"sms_provider": "console,twilio", "twilio_from_number": "+1800"},
            "CLOUDMFA_TWILIO_ACCOUNT_SID",
        ),
    ],
)
def test_a_missing_setting_is_named(settings: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(_env_file=None, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"sms_webhook_url": "ftp://relay/x"}, "not an http"),
        ({"twilio_api_base_url": "twilio.internal"}, "not an http"),
        (
            {"azure_communication_connection_string": "endpoint=http://x/;accesskey=k"},
            "endpoint=https://",
        ),
        ({"azure_communication_connection_string": "endpoint=https://x/"}, "accesskey"),
        ({"smtp_security": "ssl"}, "none"),
    ],
)
def test_malformed_settings_are_refused(settings: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Settings(_env_file=None, **settings)  # type: ignore[arg-type]


def test_the_key_of_a_bad_connection_string_is_never_echoed() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(
            _env_file=None,
            azure_communication_connection_string="endpoint=http://x/;accesskey=S3CR3T",
        )
    assert "S3CR3T" not in str(caught.value)


def test_every_provider_is_built_in_the_order_given() -> None:
    settings = Settings(
        _env_file=None,
        email_provider="azure,smtp,aws-ses,console",
        sms_provider="webhook,twilio,aws-sns,azure,console",
        email_from="no-reply@acme.example",
        smtp_host="relay.internal",
        aws_region="eu-west-1",
        azure_communication_connection_string=AZURE,
        azure_sms_from="+18005550100",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from_number="+18005550100",
        sms_webhook_url="https://sms.internal/send",
    )
    providers = build_providers(settings)
    assert providers.chain("email").names == ("azure", "smtp", "aws-ses", "console")
    assert providers.chain("sms").names == ("webhook", "twilio", "aws-sns", "azure", "console")


def test_smtp_alone_loads_no_cloud_sdk() -> None:
    code = (
        "import sys; from cloudmfa.config import Settings;"
        "from cloudmfa.delivery.providers import build_providers;"
        "build_providers(Settings(_env_file=None, email_provider='smtp', smtp_host='h',"
        " email_from='a@b.c'));"
        "print(sorted(m for m in ('boto3', 'twilio', 'azure', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
